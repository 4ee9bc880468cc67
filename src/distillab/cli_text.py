"""What --help shows, kept here so that --help and --version answer without importing torch (under half a second).

Each figure is the code's own: tests/test_cli_help.py compares this with ``live()``, which reads the option
dataclasses and the registries; ``python -m distillab.cli_text`` prints the current values to paste here after
changing a default or adding a built-in loss, method or benchmark.
"""

TEXT = {'defaults': {'train': {'data': 'digits',
                        'model': 'mlp:hidden=100',
                        'checkpoint_every': 1,
                        'split_seed': 0,
                        'log': ['jsonl']},
              'distill': {'data': 'digits',
                          'student': 'mlp:hidden=32',
                          'student_tap': 'penultimate',
                          'teacher_tap': 'penultimate',
                          'cache': 'auto',
                          'checkpoint_every': 1,
                          'split_seed': 0,
                          'log': ['jsonl'],
                          'teacher_inputs': 'raw'},
              'metadata': {'records': 'top', 'temperature': 1.0, 'split_seed': 0, 'max_full': 1536, 'modes': 32},
              'audit': {'fpr': [0.001, 0.01], 'seed': 0, 'device': 'cpu'},
              'tune': {'seeds': [0, 1, 2]},
              'predict': {'split': 'train', 'output': 'probs', 'device': 'cpu'},
              'condense_data': {'data': 'digits',
                                'method': 'dm',
                                'ipc': 10,
                                'labels': 'hard',
                                'seed': 0,
                                'split_seed': 0,
                                'checkpoint_every': 10,
                                'log': ['jsonl'],
                                'device': 'cpu'},
              'experts': {'data': 'digits', 'split_seed': 0, 'log': ['jsonl']},
              'distill_datafree': {'method': 'noise',
                                   'student': 'mlp:hidden=32',
                                   'checkpoint_every': 1,
                                   'log': ['jsonl']},
              'evaluate_synset': {'seed': 0, 'compile': 'off', 'log': ['jsonl'], 'device': 'cpu'},
              'data_export': {'split': 'train'},
              'run_benchmark': {'workers': 1, 'cells': []}},
 'train': {'epochs': 10,
           'batch_size': 128,
           'optimizer': 'sgd',
           'lr': 0.05,
           'momentum': 0.9,
           'weight_decay': 0.0005,
           'schedule': 'cosine',
           'label_smoothing': 0.0,
           'augment': 'none',
           'max_norm': 0.0,
           'precision': 'fp32',
           'compile': 'off',
           'seed': 0,
           'select': 'last',
           'device': 'cpu'},
 'hinton': {'temperature': 4.0, 'alpha': 0.9},
 'serve': {'host': '127.0.0.1',
           'port': None,
           'output': 'probs',
           'max_batch': 1024,
           'rate': 0.0,
           'noise': 0.0,
           'round': 0,
           'seed': 0,
           'token': None,
           'request_timeout': 10.0,
           'max_connections': 512,
           'foreground_port': 8000},
 'pseudolabel': {'transforms': 'shift,scale,rotate', 'threshold': 0.0, 'soft': False, 'ratio': '6:4'},
 'protocol': {'runs': 5,
              'models': ['convnet:width=128,depth=3'],
              'epochs': 300,
              'lr': 0.01,
              'momentum': 0.9,
              'weight_decay': 0.0005,
              'batch_size': 256,
              'dsa': False,
              'augment': 'none',
              'dsa_draw': 'batch'},
 'losses': 'at (w=1000.0, student=penultimate, teacher=penultimate); ce (w=1.0, smoothing=0.0); crd (w=0.8, '
           'student=penultimate, teacher=penultimate, feat_dim=128, negatives=16384, nce_t=0.07, momentum=0.5); '
           'dist (w=1.0, beta=1.0, gamma=1.0, T=1.0); dkd (w=1.0, alpha=1.0, beta=8.0, T=4.0, warmup=20, '
           'standardise=0); hint (w=1.0, student=penultimate, teacher=penultimate); kd (w=1.0, T=4.0, noise=0.0); '
           'kdsvd (w=1.0, student=penultimate, teacher=penultimate, k=1); logit-mse (w=1.0, center=0, reduce=sum); '
           'lskd (w=1.0, T=2.0); nst (w=50.0, student=penultimate, teacher=penultimate); ofd (w=0.001, '
           'student=penultimate, teacher=penultimate, kernel_size=1, norm=); pkt (w=30000.0, student=penultimate, '
           'teacher=penultimate); reviewkd (w=1.0, student=penultimate, teacher=penultimate, warmup=20, '
           'max_mid=512); rkd (w=1.0, student=penultimate, teacher=penultimate, distance=25.0, angle=50.0); sp '
           '(w=3000.0, student=penultimate, teacher=penultimate); vid (w=1.0, student=penultimate, '
           'teacher=penultimate, init_pred_var=5.0, eps=1e-05)',
 'methods': 'bptt (iterations=1000, steps=10, epochs=3, lr_init=0.02, lr_img=0.01, batch_real=1024, '
            'init_net=fixed, model=lenet5, lr_decay_every=0, lr_decay=0.5, init=real, attack=); gm '
            '(iterations=1000, outer=0, inner=0, lr_img=0.1, momentum=0.5, lr_net=0.01, batch_real=256, '
            'batch_train=256, model=[convnet:width=128,depth=3], dsa=0, init=real, real_draw=replace, '
            'inner_unit=step, dsa_strategy=, dsa_style=distillab, compile=off); dm (iterations=1000, lr_img=1.0, '
            'momentum=0.5, batch_real=256, model=[convnet:width=128,depth=3], dsa=1, init=real, clamp=none, '
            'real_draw=replace, dsa_strategy=, dsa_style=distillab, compile=off); dsa (iterations=1000, outer=0, '
            'inner=0, lr_img=0.1, momentum=0.5, lr_net=0.01, batch_real=256, batch_train=256, '
            'model=[convnet:width=128,depth=3], dsa=1, init=real, real_draw=replace, inner_unit=step, '
            'dsa_strategy=, dsa_style=distillab, compile=off); herding (space=pixels, '
            'model=[convnet:width=128,depth=3], epochs=3, lr=0.01, batch_size=256); kmeans (no options); mean (no '
            'options); mtt (experts=, num_experts=5, expert_train_epochs=0, iterations=5000, syn_steps=20, '
            'expert_epochs=3, max_start=20, lr_img=1000.0, lr_lr=1e-05, lr_init=0.01, batch_syn=0, '
            'model=[convnet:width=128,depth=3], dsa=1, init=real, unroll=checkpointed, dsa_strategy=, '
            'dsa_style=distillab); random (no options)',
 'protocols': 'distillab (runs=5, models=[convnet:width=128,depth=3], epochs=300, lr=0.01, momentum=0.9, '
              'weight_decay=0.0005, batch_size=256, dsa=0, augment=none, dsa_draw=batch); vico-dsa (runs=20, '
              'models=[convnet:width=128,depth=3], epochs=1000, lr=0.01, momentum=0.9, weight_decay=0.0005, '
              'batch_size=256, strategy=auto, style=vico); mtt (runs=5, models=[convnet:width=128,depth=3], '
              'epochs=1000, lr=0.0, momentum=0.9, weight_decay=0.0005, batch_size=256, '
              'strategy=color_crop_cutout_flip_scale_rotate, style=vico); vico-dc (runs=20, '
              'models=[convnet:width=128,depth=3], epochs=0, lr=0.01, momentum=0.9, weight_decay=0.0005, '
              'batch_size=256, strategy=auto, strategy_bn=crop_noise, crop=4, scale=0.2, rotate=45, noise=0.001); '
              'vico-dm (runs=20, models=[convnet:width=128,depth=3], epochs=1000, lr=0.01, momentum=0.9, '
              'weight_decay=0.0005, batch_size=256, strategy=color_crop_cutout_flip_scale_rotate, style=vico); '
              'wang2018 (runs=200, models=[convnet:width=128,depth=3], epochs=300, lr=0.01, momentum=0.9, '
              'weight_decay=0.0005, batch_size=256)',
 'labels': 'iterations=300, steps=10, lr_inner=0.1, lr=0.01, batch_real=256, model=[convnet:width=32,depth=3], '
           'init_logit=3.0',
 'datafree': 'dafl (samples=12000, iterations=2000, batch=256, lr=0.01, latent=100, width=16, oh=1.0, '
             'activation=0.1, balance=5.0); deepinversion (samples=12000, iterations=300, batch=256, lr=0.1, '
             'bn=1.0, tv=0.05, l2=0.001, jitter=2, flip=0); lopes (samples=12000, metadata=, records=, '
             'iterations=300, batch=256, lr=0.07, init_mean=0.15, init_std=0.1); noise (samples=12000, scale=1.0)',
 'audits': 'class-stats (real_per_class=500); confusion (models=3, model=[convnet:width=32,depth=3], epochs=300, '
           'max_confusion=0.5); labels (confidence=0.9); membership (privacy; shadows=8, '
           'model=[convnet:width=32,depth=3], epochs=300, bootstrap=200); memorisation (privacy; copy_ratio=0.1)',
 'models': 'convnet (init=default, width=128, depth=3, norm=instance, pool=avg); lenet5 (init=default, norm=none); '
           'lenet5-half (init=default, norm=none); mlp (init=default, hidden=800-800, dropout=0.0, '
           'input_dropout=0.0); mobilenetv2 (init=default, width=0.5, expand=6); resnet18 (init=default, width=64, '
           'norm=batch); resnet8 (init=default); resnet14 (init=default); resnet20 (init=default); resnet32 '
           '(init=default); resnet44 (init=default); resnet56 (init=default); resnet110 (init=default); resnet8x4 '
           '(init=default); resnet32x4 (init=default); shufflenetv1 (init=default); shufflenetv2 (init=default); '
           'vgg8 (init=default); vgg11 (init=default); vgg13 (init=default); vgg16 (init=default); vgg19 '
           '(init=default); wrn (init=default, depth=40, width=2)',
 'datasets': 'cifar10, cifar100, digits, folder:PATH, hf:PATH, mnist, npz:PATH',
 'benchmarks': ['dd-mnist',
                'wang2018',
                'wang2018-budget',
                'eval-speed',
                'dm-speed',
                'dm-budget',
                'poison-mnist',
                'privacy-mnist',
                'cross-arch',
                'datafree-mnist',
                'hinton-mnist',
                'hinton-mnist-tuned',
                'ls-teacher',
                'kd-losses',
                'takd',
                'rkd',
                'kd-speed',
                'noisy-teacher',
                'kd-losses-tuned',
                'takd-tuned',
                'omni-mnist',
                'kd-menu',
                'mtt-memory',
                'perf',
                'reproduce-mnist',
                'teacher-service'],
 'compile_modes': ['off', 'on', 'auto']}

def live() -> dict:
    """TEXT as the code has it now (imports torch)."""
    import dataclasses

    from .api import Hinton, Mixing, Protocol, PseudoLabelConfig, TrainConfig, labels_help
    from .service.server import FOREGROUND_PORT, ServeOptions
    from .audits import AUDITS
    from .condense import METHODS
    from .data import dataset_forms
    from .datafree import DATAFREE
    from .kd import LOSSES
    from .models import MODELS
    from .protocols import PROTOCOLS
    from .bench import BENCHMARKS, run_benchmark
    from .compiling import MODES

    import inspect

    from . import api

    def defaults(function) -> dict:  # a function's plain defaults (what a flag left out gets)
        return {k: list(p.default) if isinstance(p.default, tuple) else p.default
                for k, p in inspect.signature(function).parameters.items()
                if isinstance(p.default, (int, float, str, tuple)) and not isinstance(p.default, bool)}

    functions = {name: getattr(api, name) for name in ("train", "distill", "metadata", "audit", "tune", "predict",
                                                       "condense_data", "experts", "distill_datafree",
                                                       "evaluate_synset", "data_export")}
    return {"defaults": {name: defaults(f) for name, f in {**functions, "run_benchmark": run_benchmark}.items()},
            "train": {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING},
            "hinton": dataclasses.asdict(Hinton()),
            "serve": {**dataclasses.asdict(ServeOptions()), "foreground_port": FOREGROUND_PORT},
            "pseudolabel": {**dataclasses.asdict(PseudoLabelConfig()), **dataclasses.asdict(Mixing())},
            "protocol": {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                         for f in dataclasses.fields(Protocol)},
            "losses": LOSSES.help(), "methods": METHODS.help(), "protocols": PROTOCOLS.help(), "labels": labels_help(),
            "datafree": DATAFREE.help(), "audits": AUDITS.help(), "models": MODELS.help(), "datasets": dataset_forms(),
            "benchmarks": list(BENCHMARKS), "compile_modes": list(MODES)}


if __name__ == "__main__":
    import pprint

    print("TEXT = " + pprint.pformat(live(), width=116, sort_dicts=False))
