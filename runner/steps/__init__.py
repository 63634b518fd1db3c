"""Step types as data: each type's inputs, outputs and what each provider does with it, and
the service's models and the limits they impose. The recipe's schema, the plan's checks,
the providers and `sunoflow steps` all read these tables.

    types.py   the step types (TYPES)       models.py  models, limits, request rules
    outputs_doc.py  what each step gives back, as text and as JSON Schema

Never imports another part of sunoflow but the shared modules (errors, paths): it is the
data the others are built from.
"""
