"""bidding-service: an OpenRTB 2.6 bidder with exact budget safety on Redis.

The hot path is `routes.BidEndpoint` (raw ASGI, msgspec) -> `auction.Auction`
(targeting index look-up, then one batched Redis round trip that reserves budget and
frequency cap for every imp) -> a BidResponse. Win, billing, impression and click
notices come back on signed URLs (`tracking`), settle the reservation at the clearing
price and are published to `ad-events`.
"""
