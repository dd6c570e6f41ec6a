"""The closed loop: after every epoch, decide whether to stop and what to run for the rest.

The plan is made once from estimates; a run then sees what really happens. After each epoch the
runtime hands its observation (validation loss, measured time per phase, elapsed time) to a
*controller* that the app layer injects (the Strategy/Grid split of Flower: the runtime moves
tensors and never imports the planner), and the controller answers with a :class:`Decision`:
stop, or the schedule for the remaining epochs. It also answers at once on a resource event (an
edge server leaving or coming back). Everything here is plain data and numpy: no torch.

What the controller does with an observation (:meth:`ClosedLoopController.after_epoch`):

1. **Early stop.** When the validation loss is ≤ L_max (for ``confirm`` further epochs too, if
   asked) the run stops: the cloud keeps the best model, which inference serves.
2. **Online estimates.** K^exp / K^rob of the candidate being trained are refitted from its
   observed curve, seeded by the estimate the plan started from
   (:func:`jqodi.learning.online.refit_remaining`). Each resource's speed is updated from the
   measured phases (:class:`ResourceEstimates`: a robust, bounded update of a time factor per
   device and link).
3. **Re-planning** (policy ``replan``): the remaining work is a planning instance of its own
   (:func:`remaining_instance`): deadline = T_max − elapsed time, the current candidate with
   the refitted remaining epochs and no quantization cost (it is paid), every option's time and
   energy scaled by the updated factors (idle energy included where the scenario counts it: the
   nodes waiting during each term, for its scaled time, :class:`PhaseTable`), options on absent
   edges left out; other candidates
   (when the runtime can switch) from scratch with their quantization cost. The exact solver
   (:func:`jqodi.planner.solve`, ``optimal``) answers in milliseconds. Anti-churn: the current
   schedule is kept unless it can no longer meet the deadline, lacks epochs, uses an absent
   edge, eats into the time reserve (kept when a plan can keep it: ``reserve_epochs``, 1.5 epochs
   of the fastest option available, what an edge leaving mid-epoch costs; plus ``reserve_spread``
   standard deviations of the remaining planned time, from how far the epochs so far were from
   their predicted times, what a slowdown or a link outage not yet measured costs:
   :meth:`ClosedLoopController.spread_reserve_s`, only while the candidate's options trade time
   for energy, :meth:`ClosedLoopController.spread_applies`), or the new plan saves more than
   ``threshold`` (default 3 %) of the remaining energy. When no plan fits K^rob in time, the
   most epochs down to K^exp that fit are planned (``hedge``).
   Policy ``static`` never re-plans (the plan made once is followed; early stop still applies).

Every change of schedule is a :class:`Replan` record (when, why, old → new, predicted time and
energy, solve time) that the app prints. Remaining epochs run cheapest first: every prefix of a
schedule that meets the deadline meets it too, and the epochs early stopping skips are then the
costly ones.

Modules: :mod:`~jqodi.app.controller.phases` (:class:`PhaseTable`: the instance split per term of
Eq. (7)–(10)), :mod:`~jqodi.app.controller.estimates` (:class:`ResourceEstimates`),
:mod:`~jqodi.app.controller.decisions` (:class:`Observation`, :class:`Decision`, :class:`Replan`),
:mod:`~jqodi.app.controller.remaining` (the work left: :func:`remaining_instance`),
:mod:`~jqodi.app.controller.loop` (:class:`ClosedLoopController`, :func:`controller_for`),
:mod:`~jqodi.app.controller.choice` (before the run: the candidate of least expected energy under
the K estimate's spread, :func:`~jqodi.app.controller.choice.plan_by_expected_energy`).
How a run's epochs ended, as text, is :func:`jqodi.render.runs.control_lines`.
"""
from __future__ import annotations

from jqodi.app.controller.decisions import Decision, Observation, Replan
from jqodi.app.controller.estimates import ResourceEstimates
from jqodi.app.controller.loop import DEFAULT_THRESHOLD, POLICIES, ClosedLoopController, controller_for
from jqodi.app.controller.phases import PhaseTable, phase_table
from jqodi.app.controller.remaining import order_cheapest_first, remaining_instance, schedule_cost

__all__ = ["PhaseTable", "phase_table", "ResourceEstimates", "Observation", "Decision", "Replan",
           "ClosedLoopController", "controller_for", "remaining_instance", "schedule_cost",
           "order_cheapest_first", "POLICIES", "DEFAULT_THRESHOLD"]
