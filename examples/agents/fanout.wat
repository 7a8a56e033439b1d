;; fanout: on a `request` whose content names N agents ([n: u8] then, per
;; agent, [name length: u8][name]), sends each a `request` and gathers their
;; answers; when all N have answered it answers the original request with
;; `inform` and N as 4 little-endian bytes. A `failure` from an agent (its
;; handler failed, or the engine gave up on the request) is an answer too: a
;; gather never waits for ever. One gather at a time: a request that arrives
;; during one is answered `refuse`.
;;
;; Memory: 0: open ticket (i64, 0 = none), 8: answers awaited (i32), 16: received (i32).
(module
  (import "caxton" "msg_performative" (func $performative (result i32)))
  (import "caxton" "msg_in_reply_to" (func $in_reply_to (result i64)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "send" (func $send (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (import "caxton" "defer_reply" (func $defer (result i64)))
  (import "caxton" "reply_to" (func $reply_to (param i64 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32) (local $count i32) (local $index i32) (local $cursor i32) (local $name_length i32) (local $ticket i64)
    ;; An answer (inform, or failure) to our gather?
    (if (i32.or (i32.eq (call $performative) (i32.const 1))
                (i32.eq (call $performative) (i32.const 9)))
      (then
        (if (i64.eqz (i64.load (i32.const 0))) (then (return (i32.const 0))))
        (if (i64.ne (call $in_reply_to) (i64.load (i32.const 0))) (then (return (i32.const 0))))
        (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
        (if (i32.eq (i32.load (i32.const 16)) (i32.load (i32.const 8)))
          (then
            (drop (call $reply_to (i64.load (i32.const 0)) (i32.const 1) (i32.const 8) (i32.const 4)))
            (i64.store (i32.const 0) (i64.const 0))))
        (return (i32.const 0))))
    ;; A new request while a gather is open: refuse (performative 8).
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0))
      (then (drop (call $reply (i32.const 8) (i32.const 0) (i32.const 0))) (return (i32.const 0))))
    (local.set $length (call $read (i32.const 1024) (i32.const 64512)))
    (if (i32.lt_s (local.get $length) (i32.const 1)) (then (return (i32.const 1))))
    (local.set $count (i32.load8_u (i32.const 1024)))
    (if (i32.eqz (local.get $count)) (then (return (i32.const 1))))
    (local.set $ticket (call $defer))
    (if (i64.lt_s (local.get $ticket) (i64.const 1)) (then (return (i32.const 2))))
    (i64.store (i32.const 0) (local.get $ticket))
    (i32.store (i32.const 8) (local.get $count))
    (i32.store (i32.const 16) (i32.const 0))
    (local.set $cursor (i32.const 1025))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $index) (local.get $count)))
        (local.set $name_length (i32.load8_u (local.get $cursor)))
        ;; request (0) to the name, asking for an answer quoting our ticket
        (if (i32.ne (call $send (i32.add (local.get $cursor) (i32.const 1)) (local.get $name_length)
                                (i32.const 0) (i32.const 0) (i32.const 0) (local.get $ticket))
                    (i32.const 0))
          (then (i64.store (i32.const 0) (i64.const 0)) (return (i32.const 3))))
        (local.set $cursor (i32.add (local.get $cursor) (i32.add (local.get $name_length) (i32.const 1))))
        (local.set $index (i32.add (local.get $index) (i32.const 1)))
        (br $each)))
    (i32.const 0)))
