;; leak: answers every message with "kept", and keeps 64 KiB more of linear
;; memory each time (grown and touched, never freed), the way an agent with a
;; cache that never evicts does. `engine memory analyze` names it. At its
;; memory limit the engine stops the handler at the grow and answers
;; `caxton:memory-limit` (counted under MEM FAULTS); the check of grow's -1
;; below is for a host that would let the grow fail instead.
(module
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "kept")
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $page i32)
    (local.set $page (memory.grow (i32.const 1)))
    (if (i32.lt_s (local.get $page) (i32.const 0)) (then (return (i32.const 1))))
    ;; Touch the new page so it is resident, not only reserved.
    (i32.store8 (i32.shl (local.get $page) (i32.const 16)) (i32.const 1))
    (drop (call $reply (i32.const 1) (i32.const 16) (i32.const 4)))
    (i32.const 0)))
