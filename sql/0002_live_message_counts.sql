-- conversations.message_count is no longer stored: it is counted from conversation_history when
-- conversations are listed. Keeping it cost a second write of every conversation row per batch
-- (an UPDATE after the insert, non-HOT and planned as a scan of the whole table), and a stored
-- count would drift once retention drops partitions or an erasure deletes rows.
-- Stop archivers of the previous version before applying it: their batches would be refused
-- (held in Redis and retried, not dead-lettered) until they are replaced.
ALTER TABLE conversations DROP COLUMN message_count;
