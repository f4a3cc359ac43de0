"""PyTorch-VAE's 23 config files (github.com/AntixK/PyTorch-VAE, HEAD a6896b9, ``configs/*.yaml``),
written down as data: 22 in its current layout, ``vampvae.yaml`` in its 2020 one. Shared by the
config tests (each file trained as it is) and the constructor tests (``Model(**model_params)``)."""

from __future__ import annotations

from typing import Any

DATA_PARAMS = {
    "data_path": "Data/",
    "train_batch_size": 64,
    "val_batch_size": 64,
    "patch_size": 64,
    "num_workers": 4,
}
EXP_PARAMS = {
    "LR": 0.005,
    "weight_decay": 0.0,
    "scheduler_gamma": 0.95,
    "kld_weight": 0.00025,
    "manual_seed": 1265,
}


def layout(
    model: dict[str, Any],
    log_name: str | None = None,
    exp: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    exp_first: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One file of PyTorch-VAE's current layout: its shared values plus the file's own."""
    return {
        "model_params": model,
        "data_params": dict(DATA_PARAMS),
        "exp_params": {**(exp_first or {}), **EXP_PARAMS, **(exp or {})},
        "trainer_params": {"gpus": [1], "max_epochs": 10, **(trainer or {})},
        "logging_params": {"save_dir": "logs/", "name": log_name or model["name"], **(logging or {})},
    }


CONFIGS: dict[str, dict[str, Any]] = {
    "bbvae": layout(
        dict(
            name="BetaVAE",
            in_channels=3,
            latent_dim=128,
            loss_type="B",
            gamma=10.0,
            max_capacity=25,
            Capacity_max_iter=10000,
        ),
        logging={"manual_seed": 1265},
    ),
    "betatc_vae": layout(
        dict(
            name="BetaTCVAE", in_channels=3, latent_dim=10, anneal_steps=10000, alpha=1.0, beta=6.0, gamma=1.0
        )
    ),
    "bhvae": layout(dict(name="BetaVAE", in_channels=3, latent_dim=128, loss_type="H", beta=10.0)),
    "cat_vae": layout(
        dict(
            name="CategoricalVAE",
            in_channels=3,
            latent_dim=512,
            categorical_dim=40,
            temperature=0.5,
            anneal_rate=0.00003,
            anneal_interval=100,
            alpha=1.0,
        )
    ),
    "cvae": layout(dict(name="ConditionalVAE", in_channels=3, num_classes=40, latent_dim=128)),
    "dfc_vae": layout(dict(name="DFCVAE", in_channels=3, latent_dim=128)),
    "dip_vae": layout(
        dict(name="DIPVAE", in_channels=3, latent_dim=128, lambda_diag=0.05, lambda_offdiag=0.1),
        exp={"LR": 0.001, "scheduler_gamma": 0.97, "kld_weight": 1},
        logging={"manual_seed": 1265},
    ),
    "factorvae": layout(
        dict(name="FactorVAE", in_channels=3, latent_dim=128, gamma=6.4),
        exp_first={"submodel": "discriminator", "retain_first_backpass": True},
        exp={"LR_2": 0.005, "scheduler_gamma_2": 0.95},
    ),
    "gammavae": layout(
        dict(
            name="GammaVAE", in_channels=3, latent_dim=128, gamma_shape=8.0, prior_shape=2.0, prior_rate=1.0
        ),
        exp={"LR": 0.003, "weight_decay": 0.00005},
        trainer={"gradient_clip_val": 0.8},
    ),
    "hvae": layout(
        dict(name="HVAE", in_channels=3, latent1_dim=64, latent2_dim=64, pseudo_input_size=128),
        log_name="VampVAE",
    ),
    "infovae": layout(
        dict(
            name="InfoVAE",
            in_channels=3,
            latent_dim=128,
            reg_weight=110,
            kernel_type="imq",
            alpha=-9.0,
            beta=10.5,
        ),
        trainer={"gradient_clip_val": 0.8},
        logging={"manual_seed": 1265},
    ),
    "iwae": layout(dict(name="IWAE", in_channels=3, latent_dim=128, num_samples=5), exp={"LR": 0.007}),
    "joint_vae": layout(
        dict(
            name="JointVAE",
            in_channels=3,
            latent_dim=512,
            categorical_dim=40,
            latent_min_capacity=0.0,
            latent_max_capacity=20.0,
            latent_gamma=10.0,
            latent_num_iter=25000,
            categorical_min_capacity=0.0,
            categorical_max_capacity=20.0,
            categorical_gamma=10.0,
            categorical_num_iter=25000,
            temperature=0.5,
            anneal_rate=0.00003,
            anneal_interval=100,
            alpha=10.0,
        )
    ),
    "logcosh_vae": layout(
        dict(name="LogCoshVAE", in_channels=3, latent_dim=128, alpha=10.0, beta=1.0),
        exp={"scheduler_gamma": 0.97},
    ),
    "lvae": layout(
        dict(name="LVAE", in_channels=3, latent_dims=[4, 8, 16, 32, 128], hidden_dims=[32, 64, 128, 256, 512])
    ),
    "miwae": layout(dict(name="MIWAE", in_channels=3, latent_dim=128, num_samples=5, num_estimates=3)),
    "mssim_vae": layout(dict(name="MSSIMVAE", in_channels=3, latent_dim=128)),
    "swae": layout(
        dict(
            name="SWAE",
            in_channels=3,
            latent_dim=128,
            reg_weight=100,
            wasserstein_deg=2.0,
            num_projections=200,
            projection_dist="normal",
        )
    ),
    "vae": layout(dict(name="VanillaVAE", in_channels=3, latent_dim=128), trainer={"max_epochs": 100}),
    "vampvae": {  # PyTorch-VAE's 2020 layout: no data_params, the data in exp_params, Lightning 0.6's Trainer
        "model_params": {"name": "VampVAE", "in_channels": 3, "latent_dim": 128},
        "exp_params": {
            "dataset": "celeba",
            "data_path": "../../shared/Data/",
            "img_size": 64,
            "batch_size": 144,
            "LR": 0.005,
            "weight_decay": 0.0,
            "scheduler_gamma": 0.95,
        },
        "trainer_params": {"gpus": 1, "max_nb_epochs": 50, "max_epochs": 50},
        "logging_params": {"save_dir": "logs/", "name": "VampVAE", "manual_seed": 1265},
    },
    "vq_vae": layout(
        dict(name="VQVAE", in_channels=3, embedding_dim=64, num_embeddings=512, img_size=64, beta=0.25),
        exp={"scheduler_gamma": 0.0},
    ),
    "wae_mmd_imq": layout(
        dict(name="WAE_MMD", in_channels=3, latent_dim=128, reg_weight=100, kernel_type="imq"),
        log_name="WassersteinVAE_IMQ",
    ),
    "wae_mmd_rbf": layout(
        dict(name="WAE_MMD", in_channels=3, latent_dim=128, reg_weight=5000, kernel_type="rbf"),
        log_name="WassersteinVAE_RBF",
    ),
}
assert len(CONFIGS) == 23
