"""The rules of one xfer transfer, sans I/O: what is offered inside OTR
(:mod:`~xfer.transfer.offer`), how the receiver verifies the sealed stream
against the offer (:mod:`~xfer.transfer.verify`), and the policy that maps
failures to Jingle reasons and says what may be resumed
(:mod:`~xfer.transfer.policy`).

Like the other cores it never imports asyncio, slixmpp, click or files.
"""
