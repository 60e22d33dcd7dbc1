"""Running rayft on a Ray cluster: KubeRay manifest rendering (render.py) from the `cluster:`
section (rayft.schema.cluster) and validation against the KubeRay CRDs (crd_schema.py), job
submission through Ray's Jobs API (submit.py), and their CLI verbs (commands.py).

These modules are imported by their CLI verbs only, so the library stays importable without
Kubernetes or a Ray head.
"""
