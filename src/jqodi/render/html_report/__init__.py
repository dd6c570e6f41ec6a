"""The HTML report of ``jqodi report DIR``: one self-contained page (inline CSS and SVG, no
scripts, nothing fetched from anywhere) built from what evaluations and runs saved as JSON.

- :func:`evaluation_sections` — one ``evaluation.json`` (``jqodi evaluate``): every strategy's
  time vs energy (Fig. 7(c)/11(c)), loss vs energy, time and epoch with K^exp/K^rob marked
  (Fig. 7(a)/(b)), time and energy per node and per phase (Figs. 8, 12), the cut-point sweep
  (Fig. 3, Observation 4), Tables V–VII with the paper's values beside ours.
- :func:`run_sections` — one run directory (``record.json`` of ``jqodi run``, a deployment or
  ``make demo``; its ``summary.json`` when the main job wrote one): the outcome, predicted vs
  measured per epoch, phase and node, the loss curve with L_max and K^exp/K^rob, re-plans,
  inference, the probes' loss curves.
- :func:`measured_sections` — one measured evaluation (``summary.json`` of
  ``benchmarks/paper_cifar.py`` and its runs): Table VI measured beside the paper's, the
  estimators held out, Observation 2, the fine-tuning curves.
- :func:`page` — the sections as one HTML document.

A section appears only when its data does. Inputs are plain JSON data (dicts); this module
reads no files.
"""
from jqodi.render.html_report.evaluation import evaluation_sections
from jqodi.render.html_report.measured import measured_sections
from jqodi.render.html_report.page import page, table
from jqodi.render.html_report.run import run_sections

__all__ = ["page", "evaluation_sections", "measured_sections", "run_sections", "table"]
