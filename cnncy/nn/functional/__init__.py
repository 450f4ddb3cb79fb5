from .conv import conv2d
from .linear import linear
from .activation import log_softmax, relu, softmax
from .dropout import dropout
from .loss import cross_entropy, nll_loss
from .pooling import avg_pool2d, max_pool2d
