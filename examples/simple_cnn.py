"""The reference notebook's SimpleCNN, one training step, with only the imports changed.

Original: import torch / import torch.nn as nn / import torch.optim as optim.
"""
import cnncy as torch
import cnncy.nn as nn
import cnncy.optim as optim


# 定义一个简单的CNN模型 (a simple CNN model)
class SimpleCNN(nn.Module):
    def __init__(self):
        super(SimpleCNN, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
        self.fc1 = nn.Linear(32 * 14 * 14, 10)  # 假设输入图片为28x28 (28x28 input images)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = x.view(-1, 32 * 14 * 14)
        x = self.fc1(x)
        return x


# 初始化模型、损失函数和优化器 (model, loss and optimizer)
model = SimpleCNN()
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

# 输入数据(例如一批大小为4的28x28灰度图像) (a batch of four 28x28 grayscale images)
inputs = torch.randn(4, 1, 28, 28)
labels = torch.tensor([0, 1, 2, 3])

# 前向传播 (forward pass)
outputs = model(inputs)
loss = criterion(outputs, labels)

# 反向传播和优化 (backward pass and optimisation)
optimizer.zero_grad()
loss.backward()
optimizer.step()

print("Loss:", loss.item())
