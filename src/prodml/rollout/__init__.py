"""The control plane of deployments: canary analysis, promotion and rollback.

The life of one canary:

1. ``prodml rollout canary VERSION`` (:func:`controller.start_canary`) writes the deployment spec
   (``prodml.registry.deployment``): the primary at ``100 - w`` percent, the canary at ``w``, the
   settings and the rollout's state — and records the event.
2. Every server replica reads the spec on its next registry check and routes by it
   (``prodml.serve.routing``): sticky by a request field or header, per variant in ``/metrics``.
3. :class:`controller.Controller` reads every replica's ``/metrics`` at the start and end of each
   window; :func:`analysis.analyse` checks the canary's error rate, p99 and prediction shift against the
   primary over it; too few observations never pass.
4. A passing window takes the next step; the last one promotes (``champion`` moves, the old version
   becomes ``previous``); N failing windows in a row roll back. Every decision is an event with its
   evidence (``prodml rollout history``), and the state lives in the spec, so ``prodml rollout run``
   resumes a rollout whose controller died.
"""
