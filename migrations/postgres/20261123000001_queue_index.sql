-- The claim query reads the due deliveries of one sink in due order. The
-- old (sink, status, next_attempt_at) index could not return two statuses
-- in due order, so every claim read and sorted the sink's whole backlog
-- (17 ms per claim at 20,000 waiting). A partial index in due order over
-- the waiting statuses stops after the rows it claims, and delivered or
-- dead rows leave it, so it stays the size of the queue.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_queue ON deliveries (sink, next_attempt_at)
    WHERE status IN ('pending', 'in_flight');
