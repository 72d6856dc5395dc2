"""Perception backends. Each implements one Protocol whose methods are the stage verbs.

Behavior: :class:`~agent.backends.behavior_base.BehaviorBackend`
(``caption_clips``, ``merge_segments``), built for a run by
:func:`agent.backends.factory_behavior.make_behavior_backend`.
"""
