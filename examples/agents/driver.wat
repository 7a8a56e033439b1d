;; driver: loads another agent with request-reply, keeping a window of
;; requests outstanding, with no client in the loop. The benchmarks'
;; agent-to-agent scenarios pair it with `echo`.
;;
;; A `request` starts a run. Its content, little-endian:
;;   0..8   run time in nanoseconds of the node clock (0: no time limit)
;;   8..16  requests to send at most (0: no count limit; one of the two must be set)
;;   16..20 window: requests kept outstanding, 1 to 1024
;;   20..   the name of the agent to load (1 to 256 bytes)
;; The driver sends `window` 16-byte requests to that agent and, for every
;; answer, sends another until the time or the count runs out. When the last
;; outstanding request is answered it answers the start request with
;; `inform` and its report, four u64: requests answered with `inform`;
;; requests answered otherwise or that could not be sent; requests still
;; unanswered; nanoseconds from the start to the last answer.
;;
;; A `request` during a run ends it: the start request gets the report at
;; once (an answer the engine dropped, say one that waited past its deadline,
;; would otherwise keep the run open for ever), the ending request gets
;; `agree`, and answers that come later are ignored. A malformed start fails
;; with code 1.
;;
;; Memory: 0: open ticket (i64, 0 = idle), 8: deadline (0 = none),
;; 16: count limit (0 = none), 24: sent, 32..64: the report (answered,
;; failed, unanswered, elapsed), 64: started at, 72: last answer at,
;; 80: outstanding (i32), 84: name length (i32), 128: the name,
;; 512: the request payload, 1024: the start content.
(module
  (import "caxton" "msg_performative" (func $performative (result i32)))
  (import "caxton" "msg_in_reply_to" (func $in_reply_to (result i64)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "send" (func $send (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (import "caxton" "defer_reply" (func $defer (result i64)))
  (import "caxton" "reply_to" (func $reply_to (param i64 i32 i32 i32) (result i32)))
  (import "caxton" "now_ns" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 512) "0123456789abcdef")
  (func (export "caxton_abi_version") (result i32) (i32.const 1))

  ;; Whether the run may send another request at `now`: under the count and before the deadline.
  (func $more (param $now i64) (result i32)
    (if (i64.ne (i64.load (i32.const 16)) (i64.const 0))
      (then
        (if (i64.ge_u (i64.load (i32.const 24)) (i64.load (i32.const 16)))
          (then (return (i32.const 0))))))
    (if (i64.ne (i64.load (i32.const 8)) (i64.const 0))
      (then
        (if (i64.ge_u (local.get $now) (i64.load (i32.const 8)))
          (then (return (i32.const 0))))))
    (i32.const 1))

  ;; Send one request (performative 0) quoting its sequence number; whether it left.
  (func $send_one (result i32)
    (if (i32.ne (call $send (i32.const 128) (i32.load (i32.const 84)) (i32.const 0)
                            (i32.const 512) (i32.const 16)
                            (i64.add (i64.load (i32.const 24)) (i64.const 1)))
                (i32.const 0))
      (then
        (i64.store (i32.const 40) (i64.add (i64.load (i32.const 40)) (i64.const 1)))
        (return (i32.const 0))))
    (i64.store (i32.const 24) (i64.add (i64.load (i32.const 24)) (i64.const 1)))
    (i32.store (i32.const 80) (i32.add (i32.load (i32.const 80)) (i32.const 1)))
    (i32.const 1))

  ;; End the run: answer the start request (inform) with the report.
  (func $finish
    (i64.store (i32.const 48) (i64.extend_i32_u (i32.load (i32.const 80))))
    (i64.store (i32.const 56) (i64.sub (i64.load (i32.const 72)) (i64.load (i32.const 64))))
    (drop (call $reply_to (i64.load (i32.const 0)) (i32.const 1) (i32.const 32) (i32.const 32)))
    (i64.store (i32.const 0) (i64.const 0)))

  (func (export "caxton_handle") (result i32)
    (local $length i32) (local $window i32) (local $ticket i64) (local $now i64)
    ;; An answer to one of the run's requests.
    (if (i64.ne (call $in_reply_to) (i64.const 0))
      (then
        (if (i64.eqz (i64.load (i32.const 0))) (then (return (i32.const 0))))
        (local.set $now (call $now))
        (i64.store (i32.const 72) (local.get $now))
        (if (i32.eq (call $performative) (i32.const 1))
          (then (i64.store (i32.const 32) (i64.add (i64.load (i32.const 32)) (i64.const 1))))
          (else (i64.store (i32.const 40) (i64.add (i64.load (i32.const 40)) (i64.const 1)))))
        (i32.store (i32.const 80) (i32.sub (i32.load (i32.const 80)) (i32.const 1)))
        (if (call $more (local.get $now)) (then (drop (call $send_one))))
        (if (i32.eqz (i32.load (i32.const 80))) (then (call $finish)))
        (return (i32.const 0))))
    ;; Only a request starts (or ends) a run.
    (if (i32.ne (call $performative) (i32.const 0)) (then (return (i32.const 0))))
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0))
      (then
        (call $finish)
        ;; agree (7)
        (drop (call $reply (i32.const 7) (i32.const 0) (i32.const 0)))
        (return (i32.const 0))))
    (local.set $length (call $read (i32.const 1024) (i32.const 1024)))
    (if (i32.or (i32.lt_s (local.get $length) (i32.const 21))
                (i32.gt_s (local.get $length) (i32.const 276)))
      (then (return (i32.const 1))))
    (local.set $window (i32.load (i32.const 1040)))
    (if (i32.or (i32.lt_s (local.get $window) (i32.const 1))
                (i32.gt_s (local.get $window) (i32.const 1024)))
      (then (return (i32.const 1))))
    (if (i64.eqz (i64.or (i64.load (i32.const 1024)) (i64.load (i32.const 1032))))
      (then (return (i32.const 1))))
    (local.set $ticket (call $defer))
    (if (i64.lt_s (local.get $ticket) (i64.const 1)) (then (return (i32.const 2))))
    (local.set $now (call $now))
    (i64.store (i32.const 0) (local.get $ticket))
    (i64.store (i32.const 8)
      (if (result i64) (i64.eqz (i64.load (i32.const 1024)))
        (then (i64.const 0))
        (else (i64.add (local.get $now) (i64.load (i32.const 1024))))))
    (i64.store (i32.const 16) (i64.load (i32.const 1032)))
    (i64.store (i32.const 24) (i64.const 0))
    (i64.store (i32.const 32) (i64.const 0))
    (i64.store (i32.const 40) (i64.const 0))
    (i64.store (i32.const 64) (local.get $now))
    (i64.store (i32.const 72) (local.get $now))
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.sub (local.get $length) (i32.const 20)))
    (memory.copy (i32.const 128) (i32.const 1044) (i32.load (i32.const 84)))
    (block $full
      (loop $fill
        (br_if $full (i32.eqz (local.get $window)))
        (br_if $full (i32.eqz (call $more (local.get $now))))
        (br_if $full (i32.eqz (call $send_one)))
        (local.set $window (i32.sub (local.get $window) (i32.const 1)))
        (br $fill)))
    (if (i32.eqz (i32.load (i32.const 80))) (then (call $finish)))
    (i32.const 0)))
