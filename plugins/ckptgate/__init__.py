"""pytest-ckptgate: is every checkpoint under outputs/ really usable for inference?

The data flow, one module per step: ``discovery`` -> ``configs`` (+ ``stored``) -> ``schema`` ->
``routes`` (one module per way of building a model) -> ``loading`` (+ ``agreement``) -> ``forward`` ->
``report``, tied together per checkpoint by ``gate`` and exposed to pytest by ``plugin``.
"""

__version__ = "0.1.0"
