"""Running rayft on a Ray cluster: the `cluster:` config section (config.py), KubeRay manifest
rendering (render.py) and validation against the KubeRay CRDs (crd_schema.py), and job
submission through Ray's Jobs API (submit.py).

Only config.py is imported by `rayft.config`; the others are imported by their CLI verbs, so the
library stays importable without Kubernetes or a Ray head.
"""
