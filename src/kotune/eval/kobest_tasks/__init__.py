"""lm-eval task definitions of KoBEST (one YAML per task) and the functions they name (`utils.py`)."""
