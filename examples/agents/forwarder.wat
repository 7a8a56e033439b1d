;; forwarder: passes a message down a pipeline. Content is the route, then the
;; payload: [hops: u8] then, per hop, [name length: u8][name], then payload.
;; With hops left, it strips the first hop and forwards the rest to it (the
;; original sender stays the sender); with none left it answers `inform`
;; with the payload.
(module
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "forward" (func $forward (param i32 i32 i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32) (local $hops i32) (local $name_length i32) (local $rest i32)
    (local.set $length (call $read (i32.const 1024) (i32.const 64512)))
    (if (i32.or (i32.lt_s (local.get $length) (i32.const 1)) (i32.gt_s (local.get $length) (i32.const 64512)))
      (then (return (i32.const 1))))                     ;; malformed: fail the message
    (local.set $hops (i32.load8_u (i32.const 1024)))
    (if (i32.eqz (local.get $hops))
      (then
        (drop (call $reply (i32.const 1) (i32.const 1025) (i32.sub (local.get $length) (i32.const 1))))
        (return (i32.const 0))))
    (local.set $name_length (i32.load8_u (i32.const 1025)))
    ;; The rest starts one byte before the payload after the name: overwrite
    ;; that byte with the remaining hop count and forward from there.
    (local.set $rest (i32.add (i32.const 1025) (local.get $name_length)))
    (if (i32.gt_s (i32.add (local.get $name_length) (i32.const 2)) (local.get $length))
      (then (return (i32.const 2))))
    ;; The last byte of the name is about to become the hop count: keep the name at 512 first.
    (memory.copy (i32.const 512) (i32.const 1026) (local.get $name_length))
    (i32.store8 (local.get $rest) (i32.sub (local.get $hops) (i32.const 1)))
    (if (i32.ne
          (call $forward (i32.const 512) (local.get $name_length)
                         (local.get $rest) (i32.sub (i32.add (i32.const 1024) (local.get $length)) (local.get $rest)))
          (i32.const 0))
      (then (return (i32.const 3))))                     ;; unknown next hop
    (i32.const 0)))
