;; loop: never returns from its handler (for execution-time tests).
(module
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
