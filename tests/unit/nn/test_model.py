from __future__ import annotations

import numpy as np
import pytest

import lungseg.nn.model
from lungseg.nn.model import FusedBatchNorm3D, SlabGradConv3D, build_unet3d, slab_kernel_gradient


def test_output_shape_and_range() -> None:
    model = build_unet3d((32, 32, 16), base_filters=4, depth=2, dropout=0.1, l2=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 32, 32, 16, 1)
    assert np.all(y >= 0) and np.all(y <= 1)


def test_architecture_follows_the_paper() -> None:
    model = build_unet3d((16, 16, 16), base_filters=4, depth=2, dropout=0.2, l2=1e-4)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MaxPooling3D") == 2
    assert kinds.count("Conv3DTranspose") == 2
    assert kinds.count("Concatenate") == 2
    assert kinds.count("SpatialDropout3D") == 5  # 2 encoder + bottleneck + 2 decoder blocks
    assert kinds.count("FusedBatchNorm3D") == 2 * 5
    convs = [layer for layer in model.layers if type(layer).__name__ == "SlabGradConv3D" and layer.kernel_size == (3, 3, 3)]
    assert len(convs) == 10 and all(c.kernel_regularizer is not None for c in convs)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_shape_must_be_divisible() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_unet3d((30, 32, 32), depth=2)


def _bn_pair(shape: tuple = (None, 6, 5, 4, 4)) -> tuple:
    import keras

    plain, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNorm3D(momentum=0.9)
    for layer in (plain, fused):
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, shape[-1]))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]))
    return plain, fused


def test_fused_batchnorm_matches_keras_batchnorm() -> None:
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(2, 6, 5, 4, 4)).astype(np.float32))
    plain, fused = _bn_pair()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_plain, y_fused = plain(x, training=True), fused(x, training=True)
        loss_plain, loss_fused = tf.reduce_sum(y_plain**3), tf.reduce_sum(y_fused**3)
    np.testing.assert_allclose(y_fused, y_plain, atol=1e-4)
    for a, b in zip(tape.gradient(loss_fused, [x, fused.gamma, fused.beta]),
                    tape.gradient(loss_plain, [x, plain.gamma, plain.beta]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, atol=1e-5)
    n = 2 * 6 * 5 * 4  # moving variance: the batch's unbiased variance (tf.keras 2's fused BN), Keras 3 the biased one
    np.testing.assert_allclose(np.asarray(fused.moving_variance) - 0.9, (np.asarray(plain.moving_variance) - 0.9) * n / (n - 1),
                               rtol=1e-4)
    # inference uses the moving statistics
    np.testing.assert_allclose(fused(x, training=False), (x - fused.moving_mean) / np.sqrt(fused.moving_variance + 1e-3)
                               * fused.gamma + fused.beta, atol=1e-4)


def test_fused_batchnorm_falls_back_for_other_ranks() -> None:
    plain, fused = _bn_pair((None, 7, 4))
    x = np.random.default_rng(1).normal(size=(3, 7, 4)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)


def test_model_with_fused_batchnorm_saves_and_loads(tmp_path) -> None:
    import keras

    model = build_unet3d((16, 16, 16), base_filters=2, depth=1)
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert any(isinstance(layer, FusedBatchNorm3D) for layer in loaded.layers)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_slab_kernel_gradient_equals_the_3d_kernel_gradient() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 6, 7, 5, 3)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(2, 6, 7, 5, 4)).astype(np.float32))
    ref = tf.raw_ops.Conv3DBackpropFilterV2(input=x, filter_sizes=[3, 3, 3, 3, 4], out_backprop=dy,
                                            strides=[1] * 5, padding="SAME")
    np.testing.assert_allclose(slab_kernel_gradient(x, dy, 3).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("slab", [True, False])
def test_slab_conv_layer_matches_conv3d_forward_and_backward(slab: bool, monkeypatch) -> None:
    import keras
    import tensorflow as tf

    monkeypatch.setattr(lungseg.nn.model, "_SLAB", [slab])
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 8, 6, 4, 3)).astype(np.float32))
    plain, fast = keras.layers.Conv3D(4, 3, padding="same", use_bias=False), SlabGradConv3D(4, 3, padding="same", use_bias=False)
    plain.build(x.shape)
    fast.build(x.shape)
    fast.kernel.assign(plain.kernel)
    results = []
    for layer in (plain, fast):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        dx, dw = tape.gradient(loss, [x, layer.kernel])
        results.append((y.numpy(), dx.numpy(), dw.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # trains, saves and exports to ONNX
def test_slab_model_saves_loads_and_exports(tmp_path, monkeypatch) -> None:
    import keras

    from lungseg.nn.onnx_model import OnnxModel, export_onnx

    monkeypatch.setattr(lungseg.nn.model, "_SLAB", [True])
    model = build_unet3d((16, 16, 16), base_filters=2, depth=1, dropout=0.0)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(6).normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    model.fit(x, (x > 0).astype(np.float32), epochs=1, verbose=0)  # trains through the custom gradient
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded(x[:1]).numpy(), model(x[:1]).numpy(), atol=1e-6)
    export_onnx(tmp_path / "m.keras", tmp_path / "m.onnx")
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx")(x[:1]), model(x[:1]).numpy(), atol=1e-5)
