-- Identity links: an anonymous id (a device or cookie) belongs to one known user.
--
-- Written by the processor when an `identify` (or `alias`: previous id -> user id) event carrying
-- both ids is first stored; the first link of an anonymous id wins. When a link is new, the
-- anonymous profile is merged into the user's (customers, sessions, events' visitor_key) in the
-- same transaction; later events of the anonymous id alone are attributed to the user.
-- Exactly-once: only events new to `events` can create a link, and only a link new to this
-- table merges, so a redelivered or repeated identify merges nothing twice.

CREATE TABLE identities (
    anonymous_id  text PRIMARY KEY,
    user_id       text        NOT NULL,
    linked_at     timestamptz NOT NULL
);
CREATE INDEX identities_user_idx ON identities (user_id);
