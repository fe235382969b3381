"""Print README's memory table of the seed recipes, computed by `kotune plan` (tests/unit/plan/test_readme_table.py
checks README holds exactly this output, so the table cannot go stale).

    PYTHONPATH=src python scripts/memory_table.py
"""

from kotune.plan.report import markdown_table

if __name__ == "__main__":
    print(markdown_table())
