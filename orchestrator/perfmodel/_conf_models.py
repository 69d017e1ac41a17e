"""Layer shapes of the conf/model models on the conf/data inputs (generated: do not edit).

Regenerate with ``python tests/reports/model_presets_gen.py``; each layer is
``[name, fan_in, fan_out, positions, bias]``.
"""

CONF_MODELS: dict[str, dict[str, object]] = {
    "cnn-digits": {
        "description": "conf/model/cnn.yaml on data=digits (input (1, 8, 8))",
        "extra_params": 0,
        "layers": [
            ["0", 9, 16, 64, True],
            ["3", 144, 32, 16, True],
            ["7", 128, 128, 1, True],
            ["9", 128, 10, 1, True],
        ],
    },
    "cnn-mnist1d": {
        "description": "conf/model/cnn.yaml on data=mnist1d (input (1, 1, 40))",
        "extra_params": 0,
        "layers": [
            ["0", 3, 16, 40, True],
            ["3", 48, 32, 20, True],
            ["7", 320, 128, 1, True],
            ["9", 128, 10, 1, True],
        ],
    },
    "cnn-mnist5k": {
        "description": "conf/model/cnn.yaml on data=mnist5k (input (1, 28, 28))",
        "extra_params": 0,
        "layers": [
            ["0", 9, 16, 784, True],
            ["3", 144, 32, 196, True],
            ["7", 1568, 128, 1, True],
            ["9", 128, 10, 1, True],
        ],
    },
    "mlp-digits": {
        "description": "conf/model/mlp.yaml on data=digits (input (1, 8, 8))",
        "extra_params": 0,
        "layers": [["1", 64, 256, 1, True], ["3", 256, 128, 1, True], ["5", 128, 10, 1, True]],
    },
    "mlp-mnist1d": {
        "description": "conf/model/mlp.yaml on data=mnist1d (input (1, 1, 40))",
        "extra_params": 0,
        "layers": [["1", 40, 256, 1, True], ["3", 256, 128, 1, True], ["5", 128, 10, 1, True]],
    },
    "mlp-mnist5k": {
        "description": "conf/model/mlp.yaml on data=mnist5k (input (1, 28, 28))",
        "extra_params": 0,
        "layers": [["1", 784, 256, 1, True], ["3", 256, 128, 1, True], ["5", 128, 10, 1, True]],
    },
    "param-digits": {
        "description": "conf/model/param.yaml on data=digits (input (1, 8, 8))",
        "extra_params": 0,
        "layers": [
            ["stem", 9, 32, 64, True],
            ["layers.0", 288, 32, 64, True],
            ["layers.1", 288, 32, 64, True],
            ["layers.2", 288, 32, 64, True],
            ["head", 32, 10, 1, True],
        ],
    },
    "param-mnist1d": {
        "description": "conf/model/param.yaml on data=mnist1d (input (1, 1, 40))",
        "extra_params": 0,
        "layers": [
            ["stem", 3, 32, 40, True],
            ["layers.0", 96, 32, 40, True],
            ["layers.1", 96, 32, 40, True],
            ["layers.2", 96, 32, 40, True],
            ["head", 32, 10, 1, True],
        ],
    },
    "param-mnist5k": {
        "description": "conf/model/param.yaml on data=mnist5k (input (1, 28, 28))",
        "extra_params": 0,
        "layers": [
            ["stem", 9, 32, 784, True],
            ["layers.0", 288, 32, 784, True],
            ["layers.1", 288, 32, 784, True],
            ["layers.2", 288, 32, 784, True],
            ["head", 32, 10, 1, True],
        ],
    },
    "resnet-digits": {
        "description": "conf/model/resnet.yaml on data=digits (input (1, 8, 8))",
        "extra_params": 672,
        "layers": [
            ["0", 9, 16, 64, True],
            ["3.conv1", 144, 16, 64, True],
            ["3.conv2", 144, 16, 64, True],
            ["4.conv1", 144, 32, 16, True],
            ["4.conv2", 288, 32, 16, True],
            ["4.shortcut.0", 16, 32, 16, False],
            ["5.conv1", 288, 64, 4, True],
            ["5.conv2", 576, 64, 4, True],
            ["5.shortcut.0", 32, 64, 4, False],
            ["8", 64, 10, 1, True],
        ],
    },
    "resnet-mnist1d": {
        "description": "conf/model/resnet.yaml on data=mnist1d (input (1, 1, 40))",
        "extra_params": 672,
        "layers": [
            ["0", 3, 16, 40, True],
            ["3.conv1", 48, 16, 40, True],
            ["3.conv2", 48, 16, 40, True],
            ["4.conv1", 48, 32, 20, True],
            ["4.conv2", 96, 32, 20, True],
            ["4.shortcut.0", 16, 32, 20, False],
            ["5.conv1", 96, 64, 10, True],
            ["5.conv2", 192, 64, 10, True],
            ["5.shortcut.0", 32, 64, 10, False],
            ["8", 64, 10, 1, True],
        ],
    },
    "resnet-mnist5k": {
        "description": "conf/model/resnet.yaml on data=mnist5k (input (1, 28, 28))",
        "extra_params": 672,
        "layers": [
            ["0", 9, 16, 784, True],
            ["3.conv1", 144, 16, 784, True],
            ["3.conv2", 144, 16, 784, True],
            ["4.conv1", 144, 32, 196, True],
            ["4.conv2", 288, 32, 196, True],
            ["4.shortcut.0", 16, 32, 196, False],
            ["5.conv1", 288, 64, 49, True],
            ["5.conv2", 576, 64, 49, True],
            ["5.shortcut.0", 32, 64, 49, False],
            ["8", 64, 10, 1, True],
        ],
    },
}
