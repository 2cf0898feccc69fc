"""Gu & Tresp's search (``search.method = "gates"``): `layout` (where the gates sit, the network
left when some close), `optim` (loss, cost weights, proximal step), `engine` (one gate search),
`method` (the `SearchMethod`), `config` (``[gates]``), `report` (``search/gates/``)."""
