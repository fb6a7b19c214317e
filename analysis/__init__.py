"""Analysis: merge per-run parquet files, build the paper's tables and plots.

python -m analysis.collect          # results/runs/*.parquet -> results/results.parquet
python -m analysis.tables           # Markdown + LaTeX tables into results/tables/
python -m analysis.plots            # PNG plots into results/plots/
"""
