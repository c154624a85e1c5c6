"""diffusers pipelines that add a noise plan to the stock SD and SDXL pipelines."""
