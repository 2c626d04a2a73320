"""``--fix``: recover missing configs, and write them only when proven by the weights.

gather evidence (``wandb_runs``, ``wandb_log``, ``hydra_runs``, ``stored_hparams``) -> rank (``matching``)
-> verify (``verify``) -> write (``write``), orchestrated by ``recover``.
"""

from ckptgate.recovery.recover import RecoverySettings, RecoveryTrace, default_wandb_dir, recover

__all__ = ["RecoverySettings", "RecoveryTrace", "default_wandb_dir", "recover"]
