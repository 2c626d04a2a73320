"""ckptgate's checks: one test per checkpoint and check.

In this repository they run with ``pytest checks/``; installed, they ship as ``ckptgate.checks`` and run in
any project with ``pytest --pyargs ckptgate.checks``. Add your own checks beside them with the same
public fixtures (``checkpoint``, ``ckpt_config``, ``ckpt_model``, ...).
"""
