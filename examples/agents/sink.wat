;; sink: takes every message and answers none (the one-way benchmark's receiver).
(module
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32) (i32.const 0)))
