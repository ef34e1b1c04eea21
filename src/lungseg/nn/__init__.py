"""The networks and how they run: the 3D U-Net, its losses and Keras metrics, ONNX runtime, TensorFlow settings.

Used by training (fit) and inference (predict); imports nothing from either.
"""
