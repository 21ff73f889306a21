"""Squashing person overrides into `events.person_id` (`squash_person_overrides`): snapshot the overrides
written before a time, look them up through a dictionary, rewrite `events.person_id` partition by partition,
delete exactly the overrides squashed, then redo what was computed from the old ids."""
