"""`pearl analyze RUN_DIR...`: AKD's analyses (Figs. 4-8, Table 4) over any set of search folders.

* `runs`: the search folders, read (never written) through `ResultsStore` and the config loader;
* `stats`: the pure math (stages, one-hot encodings, PCA, bounds, separability, Fig. 8);
* `plots`: the figures; `winning`: Table 4's winning ratio (trains students, resumable);
* `report`: ``analysis.md`` + CSVs + PNGs in the --out folder.
"""
