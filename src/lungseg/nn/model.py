"""The paper's 3D U-Net (Keras 3).

Input ``(batch, D, H, W, 1)`` float32 standardised CT on the network grid; output
``(batch, D, H, W, 1)`` sigmoid lung probability. Per level: two (Conv3D 3x3x3 + BatchNorm
+ ReLU), SpatialDropout3D; MaxPool3D down; Conv3DTranspose up, concatenated with the skip;
L2 on every conv kernel. D, H, W must be divisible by ``2**depth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers, regularizers

from lungseg.errors import LungsegError
from lungseg.nn.runtime import configure_threads


@keras.saving.register_keras_serializable(package="lungseg")
class FusedBatchNorm3D(layers.BatchNormalization):
    """BatchNormalization over the channel axis of ``(B, D, H, W, C)`` as one fused kernel.

    Keras 3 normalises with a chain of elementwise ops (moments, subtract, scale, ...), each a
    full pass over the volume. On the TensorFlow backend this layer folds ``(H, W)`` into one
    axis and calls ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU): the same normalisation,
    forward and backward in one pass each. Measured on a 2-core AVX2 host (oneDNN on), BN plus
    ReLU forward and backward on ``(4, 64, 64, 64, 8)``: 23 ms instead of 139 ms
    (``benchmarks/train_throughput.py``). Anything else (another backend or rank, a mask,
    renorm, synchronised BN, float16) falls back to the Keras implementation. The moving
    variance is updated with the batch's unbiased variance, as tf.keras 2's fused BN did.
    """

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else -1
        return (
            keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 5
            and axis in (-1, 4)
            and mask is None
            and not self.renorm
            and not self.synchronized
            and inputs.dtype == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        shape = tf.shape(inputs)
        channels = inputs.shape[-1]
        flat = tf.reshape(inputs, tf.stack([shape[0], shape[1], shape[2] * shape[3], channels]))
        gamma = self.gamma if self.scale else tf.ones((channels,), inputs.dtype)
        beta = self.beta if self.center else tf.zeros((channels,), inputs.dtype)
        train = bool(training) and self.trainable
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=flat, scale=tf.convert_to_tensor(gamma), offset=tf.convert_to_tensor(beta),
            mean=tf.convert_to_tensor(self.moving_mean) if not train else tf.zeros((0,), inputs.dtype),
            variance=tf.convert_to_tensor(self.moving_variance) if not train else tf.zeros((0,), inputs.dtype),
            epsilon=self.epsilon, is_training=train,
        )[:3]
        if train:
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.reshape(y, shape)


def slab_kernel_gradient(x, dy, k: int = 3):  # noqa: ANN001, ANN201 - tf.Tensors
    """Kernel gradient of a stride-1 'same' 3D convolution as one 2D convolution gradient.

    ``dW[a, b, c, i, o] = sum x_pad[n, d + a, h + b, w + c, i] * dy[n, d, h, w, o]``: the ``k``
    depth-shifted copies of ``x`` stacked on the channel axis, with depth folded into the batch,
    make it the kernel gradient of a ``k x k`` 2D convolution with ``k * C_in`` input channels.
    ``x`` is ``(N, D, H, W, C_in)``, ``dy`` ``(N, D, H, W, C_out)``; returns ``(k, k, k, C_in, C_out)``.
    """
    import tensorflow as tf

    p, cin, cout = k // 2, x.shape[-1], dy.shape[-1]
    shape = tf.shape(x)
    n, d, h, w = shape[0], shape[1], shape[2], shape[3]
    xp = tf.pad(x, [[0, 0], [p, p], [0, 0], [0, 0], [0, 0]])
    slabs = tf.reshape(tf.concat([xp[:, a : a + d] for a in range(k)], axis=-1), tf.stack([n * d, h, w, k * cin]))
    grad = tf.raw_ops.Conv2DBackpropFilter(
        input=slabs, filter_sizes=[k, k, k * cin, cout], out_backprop=tf.reshape(dy, tf.stack([n * d, h, w, cout])),
        strides=[1, 1, 1, 1], padding="SAME",
    )  # [b, c, (a, i), o]
    return tf.transpose(tf.reshape(grad, [k, k, k, cin, cout]), [2, 0, 1, 3, 4])


_SLAB: list[bool] = []  # decided once per process


def _slab_enabled() -> bool:
    if not _SLAB:
        import tensorflow as tf

        from lungseg.nn.runtime import use_slab_kernel_gradient

        _SLAB.append(use_slab_kernel_gradient() and not tf.config.list_logical_devices("GPU"))
    return _SLAB[0]


@keras.saving.register_keras_serializable(package="lungseg")
class SlabGradConv3D(layers.Conv3D):
    """Conv3D whose kernel gradient is computed by :func:`slab_kernel_gradient` where that is
    faster (x86 CPUs without AVX-512, no GPU: :func:`lungseg.nn.runtime.use_slab_kernel_gradient`).

    The forward pass and the input gradient are TensorFlow's (oneDNN) 3D convolution; only the
    kernel gradient's algorithm changes (equal to float rounding, tested). Anything but a
    stride-1, undilated, ungrouped 'same' channels-last convolution on the TensorFlow backend is
    plain Conv3D.
    """

    def _slab(self, inputs) -> bool:  # noqa: ANN001
        k = self.kernel_size[0]
        return (
            keras.backend.backend() == "tensorflow"
            and k % 2 == 1 and self.kernel_size == (k, k, k)
            and self.strides == (1, 1, 1) and self.dilation_rate == (1, 1, 1) and self.groups == 1
            and self.padding == "same" and self.data_format == "channels_last"
            and len(inputs.shape) == 5 and inputs.dtype == "float32"
            and _slab_enabled()
        )

    def convolution_op(self, inputs, kernel):  # noqa: ANN001, ANN201
        if not self._slab(inputs):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        k = self.kernel_size[0]

        @tf.custom_gradient
        def conv(x, w):  # noqa: ANN001, ANN202
            y = tf.nn.conv3d(x, w, strides=[1, 1, 1, 1, 1], padding="SAME")

            def grad(dy):  # noqa: ANN001, ANN202
                dx = tf.raw_ops.Conv3DBackpropInputV2(
                    input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=[1, 1, 1, 1, 1], padding="SAME")
                return dx, slab_kernel_gradient(x, dy, k)

            return y, grad

        return conv(inputs, tf.convert_to_tensor(kernel))


def conv_block(
    x: keras.KerasTensor, filters: int, l2: float, dropout: float, name: str, bn_momentum: float = 0.9
) -> keras.KerasTensor:
    """Two (Conv3D 3x3x3 -> BatchNorm -> ReLU) then SpatialDropout3D; shape ``(B, D, H, W, filters)``."""
    for n in (1, 2):
        x = SlabGradConv3D(
            filters, 3, padding="same", use_bias=False,
            kernel_regularizer=regularizers.L2(l2) if l2 > 0 else None, name=f"{name}_conv{n}",
        )(x)
        x = FusedBatchNorm3D(momentum=bn_momentum, name=f"{name}_bn{n}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{n}")(x)
    if dropout > 0:
        x = layers.SpatialDropout3D(dropout, name=f"{name}_drop")(x)
    return x


def build_unet3d(
    shape: tuple[int, int, int] = (64, 64, 64),
    base_filters: int = 16,
    depth: int = 3,
    dropout: float = 0.1,
    l2: float = 1e-5,
    bn_momentum: float = 0.9,
    in_channels: int = 1,
) -> keras.Model:
    """Build the 3D U-Net.

    Args:
        shape: Network grid ``(D, H, W)``, each divisible by ``2**depth``.
        base_filters: Filters at the first level; doubled at each level down.
        depth: Number of poolings (levels below the first).
        dropout: SpatialDropout3D rate in encoder and decoder blocks (0 = none).
        l2: L2 factor on conv kernels (0 = none).
        in_channels: Input channels (1: the CT; the cascade's stage 2 adds the stage-1 probability).
            ``shape`` entries may be None for a fully convolutional model that accepts any size
            divisible by ``2**depth``.
        bn_momentum: BatchNorm moving-average momentum. 0.9 rather than Keras' 0.99: with ~10
            steps per epoch the moving statistics used for validation catch up within an epoch
            instead of ten, so validation loss (which drives LR and early stopping) is meaningful
            from the start.

    Returns:
        An uncompiled ``keras.Model`` mapping ``(B, D, H, W, 1)`` -> ``(B, D, H, W, 1)`` in [0, 1].
    """
    if any(s is not None and s % (2**depth) for s in shape):
        raise ValueError(f"network shape {tuple(shape)} must be divisible by 2**depth = {2**depth}")
    inputs = keras.Input((*shape, in_channels), name="ct")
    x, skips = inputs, []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, l2, dropout, f"enc{level}", bn_momentum)
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool{level}")(x)
    x = conv_block(x, base_filters * 2**depth, l2, dropout, "bottleneck", bn_momentum)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv3DTranspose(
            filters, 2, strides=2, padding="same",
            kernel_regularizer=regularizers.L2(l2) if l2 > 0 else None, name=f"up{level}",
        )(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, l2, dropout, f"dec{level}", bn_momentum)
    outputs = layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="lung_prob")(x)
    return keras.Model(inputs, outputs, name="unet3d")


def load_keras_model(path: str | Path, hint: str = "") -> Any:
    """Load a ``.keras`` file uncompiled (this module registers the custom layers), with the thread settings for inference.

    Raises:
        LungsegError: one line naming the file (plus ``hint``) when Keras cannot load it.
    """
    configure_threads()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - keras raises many types for bad files
        raise LungsegError(f"{path}: cannot load the Keras model ({type(e).__name__}: {e}){hint}") from e
