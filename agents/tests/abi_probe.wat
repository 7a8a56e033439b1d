;; abi_probe: one rule or limit of the agent ABI per message, so that tests
;; can run the same probes on every design that hosts agents. The content is
;; one byte, the probe's number; the handler returns what the probed host
;; function returned (0: the message is handled), or 100 when a step before
;; it did not give what the probe needs.
;;
;;  0  a deferred-reply ticket answers once; its second use: NO_SENDER
;;  1  content of exactly CONTENT_BYTES_MAX (1 MiB) is sent (memory grows for it)
;;  2  one byte more: TOO_LARGE
;;  3  a receiver name over NAME_BYTES_MAX (256): TOO_LARGE
;;  4  a receiver nobody has deployed: UNKNOWN_RECEIVER
;;  5  SENDS_PER_MESSAGE_MAX (1024) sends, then OUTBOX_FULL
;;  6  DEFERRED_REPLIES_MAX (1024) open tickets, then OUTBOX_FULL
;;  7  a state key over STATE_KEY_BYTES_MAX (256): TOO_LARGE
;;  8  a state value over STATE_VALUE_BYTES_MAX (64 KiB): TOO_LARGE
;;  9  STATE_KEYS_MAX (4096) keys, then a new one: STATE_FULL
;; 10  performative 11: BAD_PERFORMATIVE
;; 11  content past the end of memory (one page): OUT_OF_BOUNDS
;;
;; Probes 6 and 9 fill what outlives a message (tickets, state): run each
;; probe on a fresh instance of a fresh agent.
(module
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "send" (func $send (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (import "caxton" "defer_reply" (func $defer (result i64)))
  (import "caxton" "reply_to" (func $reply_to (param i64 i32 i32 i32) (result i32)))
  (import "caxton" "state_put" (func $state_put (param i32 i32 i32 i32) (result i32)))
  ;; 0: scratch, 64: a name, 128: the probe number.
  (memory (export "memory") 1)
  (data (i32.const 64) "nobody")
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $probe i32)
    (if (i32.ne (call $read (i32.const 128) (i32.const 1)) (i32.const 1))
      (then (return (i32.const 99))))
    (local.set $probe (i32.load8_u (i32.const 128)))
    (if (i32.eq (local.get $probe) (i32.const 0)) (then (return (call $ticket_twice))))
    (if (i32.eq (local.get $probe) (i32.const 1)) (then (return (call $largest_content))))
    (if (i32.eq (local.get $probe) (i32.const 2))
      (then (return (call $reply (i32.const 1) (i32.const 0) (i32.const 1048577)))))
    (if (i32.eq (local.get $probe) (i32.const 3))
      (then (return (call $send (i32.const 0) (i32.const 257) (i32.const 0)
                                (i32.const 0) (i32.const 0) (i64.const 0)))))
    (if (i32.eq (local.get $probe) (i32.const 4))
      (then (return (call $send (i32.const 64) (i32.const 6) (i32.const 0)
                                (i32.const 0) (i32.const 0) (i64.const 0)))))
    (if (i32.eq (local.get $probe) (i32.const 5)) (then (return (call $fill_outbox))))
    (if (i32.eq (local.get $probe) (i32.const 6)) (then (return (call $fill_tickets))))
    (if (i32.eq (local.get $probe) (i32.const 7))
      (then (return (call $state_put (i32.const 0) (i32.const 257) (i32.const 0) (i32.const 1)))))
    (if (i32.eq (local.get $probe) (i32.const 8))
      (then (return (call $state_put (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 65537)))))
    (if (i32.eq (local.get $probe) (i32.const 9)) (then (return (call $fill_state))))
    (if (i32.eq (local.get $probe) (i32.const 10))
      (then (return (call $reply (i32.const 11) (i32.const 0) (i32.const 0)))))
    (if (i32.eq (local.get $probe) (i32.const 11))
      (then (return (call $reply (i32.const 1) (i32.const 65535) (i32.const 2)))))
    (i32.const 98))
  (func $ticket_twice (result i32)
    (local $ticket i64)
    (local.set $ticket (call $defer))
    (if (i64.lt_s (local.get $ticket) (i64.const 1)) (then (return (i32.const 100))))
    (if (i32.ne (call $reply_to (local.get $ticket) (i32.const 1) (i32.const 0) (i32.const 0))
                (i32.const 0))
      (then (return (i32.const 100))))
    (call $reply_to (local.get $ticket) (i32.const 1) (i32.const 0) (i32.const 0)))
  (func $largest_content (result i32)
    ;; 16 more pages: 17 in all, past 1 MiB.
    (if (i32.lt_s (memory.grow (i32.const 16)) (i32.const 0)) (then (return (i32.const 100))))
    (call $reply (i32.const 1) (i32.const 0) (i32.const 1048576)))
  (func $fill_outbox (result i32)
    (local $index i32)
    (block $full
      (loop $each
        (br_if $full (i32.eq (local.get $index) (i32.const 1024)))
        (if (i32.ne (call $reply (i32.const 1) (i32.const 0) (i32.const 0)) (i32.const 0))
          (then (return (i32.const 100))))
        (local.set $index (i32.add (local.get $index) (i32.const 1)))
        (br $each)))
    (call $reply (i32.const 1) (i32.const 0) (i32.const 0)))
  (func $fill_tickets (result i32)
    (local $index i32)
    (block $full
      (loop $each
        (br_if $full (i32.eq (local.get $index) (i32.const 1024)))
        (if (i64.lt_s (call $defer) (i64.const 1)) (then (return (i32.const 100))))
        (local.set $index (i32.add (local.get $index) (i32.const 1)))
        (br $each)))
    (i32.wrap_i64 (call $defer)))
  (func $fill_state (result i32)
    (local $index i32)
    (block $full
      (loop $each
        (br_if $full (i32.eq (local.get $index) (i32.const 4096)))
        ;; key: the index's 4 bytes at 0; value: its first byte
        (i32.store (i32.const 0) (local.get $index))
        (if (i32.ne (call $state_put (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 1))
                    (i32.const 0))
          (then (return (i32.const 100))))
        (local.set $index (i32.add (local.get $index) (i32.const 1)))
        (br $each)))
    (i32.store (i32.const 0) (i32.const 4096))
    (call $state_put (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 1))))
