"""The schema of rayft's one YAML file (pydantic v2; unknown keys are errors), in one package.

base.py (`Strict`, the one base of every section), sections.py (model, adapter, data, training,
scaling, storage, eval, tracking), scaling.py (strategy / QLoRA options and their cross-checks),
stage.py (`StageBase`, what every stage config shares), tune.py + search_space.py (`tune:`),
serve.py (`serve:`), cluster.py (`cluster:`), and pipeline.py: `Pipeline`, the whole file, whose
`stages` accept every stage type registered in rayft.stages (each stage module declares its own
config class). Loading, `--set` and error messages live in rayft.config.load.
"""
