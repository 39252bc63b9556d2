"""The mount points: where a call enters the engine.

``decorator`` (``@resilient_api``), ``requests_adapter`` (``ResilientAdapter``
for a ``requests.Session``), ``httpx_transport`` (``ResilientTransport`` and
``AsyncResilientTransport``) and ``_transport``, what the transports share.
Each supplies only how to make one attempt, how to classify its result and
how to discard a result that will be retried; the engine decides the rest.
"""
