"""``--fix``: recover missing configs, and write them only when proven by the weights.

gather evidence (``wandb_runs``, ``wandb_log``, ``hydra_runs``, ``cli_runs``) -> rank (``matching``) -> verify
(``verify``) -> write (``write``), orchestrated by ``recover``. A checkpoint's own stored hyperparameters are
no evidence here: they are a config source of the gate itself (``ckptgate.stored``).
"""

from ckptgate.recovery.recover import RecoverySettings, RecoveryTrace, default_wandb_dir, recover

__all__ = ["RecoverySettings", "RecoveryTrace", "default_wandb_dir", "recover"]
