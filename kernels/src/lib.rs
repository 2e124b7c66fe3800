//! # tessera-kernels
//!
//! Tile kernels written in Rust, NKI style: a [`KernelBuilder`] records a
//! [`tessera_ir::TileProgram`] while ordinary Rust code runs, so loops are unrolled at recording
//! time and every instruction is checked against the target the moment it is written.
//!
//! ## Writing a kernel
//!
//! 1. Create a builder for a target and declare the HBM tensors: [`KernelBuilder::input`],
//!    [`KernelBuilder::output`], [`KernelBuilder::scratch`] return [`Tensor`] handles.
//! 2. Allocate on-chip buffers with [`KernelBuilder::sbuf`] / [`KernelBuilder::psum`]: a
//!    [`Tile`] of `partitions x free_shape`. Names are made unique (`acc`, `acc.1`, ...), so a
//!    loop may allocate under one name; [`KernelBuilder::free`] ends a buffer's life.
//! 3. Describe operands with views. From a tile: [`Tile::all`], [`Tile::view`] (a partition
//!    range and free ranges), [`Tile::cols`] (a flat free range), [`Tile::col`] (`[P, 1]`),
//!    [`Tile::bcast_col`] (stride 0 along the free dimension), [`Tile::transposed`],
//!    [`Tile::ap`]. From a tensor, seen as rows x last axis: [`Tensor::rows`],
//!    [`Tensor::block`], [`Tensor::block_t`] (transposed, for `A^T`), [`Tensor::bcast_row`]
//!    (stride 0 across partitions), [`Tensor::ap`].
//! 4. Record instructions: one method per ISA instruction (`dma_copy`, `nc_matmul`,
//!    `nc_transpose`, `activation`, `tensor_tensor`, `tensor_scalar`, `tensor_reduce`,
//!    `tensor_copy`, `memset`, `iota`, `affine_select`, `select`). Methods ending in `_on` take
//!    the engine; the others pick the vector engine (or the only engine that can run them).
//! 5. [`KernelBuilder::finish`] frees what is still live, verifies the whole program and
//!    returns it.
//!
//! Each method returns `Result<_, KernelError>`; an error names the instruction, the rule and
//! the line of your kernel that recorded it (the methods are `#[track_caller]`).
//!
//! ```
//! use tessera_ir::{ActFunc, AluOp, DType, TargetSpec};
//! use tessera_kernels::{KernelBuilder, KernelError};
//!
//! /// `y = relu(x) * 2` for a 100 x 64 f32 tensor.
//! fn relu_twice(target: &TargetSpec) -> Result<tessera_ir::TileProgram, KernelError> {
//!     let mut k = KernelBuilder::new("relu_twice", target);
//!     let x = k.input("x", DType::F32, &[100, 64])?;
//!     let y = k.output("y", DType::F32, &[100, 64])?;
//!     let t = k.sbuf("t", DType::F32, 100, &[64])?;
//!     k.dma_copy(&t, x.rows(0..100))?;
//!     k.act(&t, &t, ActFunc::Relu)?;
//!     k.tensor_scalar(&t, &t, AluOp::Mul, 2.0)?;
//!     k.dma_copy(y.rows(0..100), &t)?;
//!     k.finish()
//! }
//!
//! let program = relu_twice(&TargetSpec::trn2()).unwrap();
//! assert_eq!(program.insts.len(), 6); // alloc, dma, act, tensor_scalar, dma, free
//! ```
//!
//! ## The library
//!
//! [`library`] holds ready kernels for any shape: [`library::matmul`], [`library::binary`]
//! (numpy broadcasting through stride-0 DMA views), [`library::unary`], [`library::softmax`],
//! [`library::layer_norm`] and [`library::transpose2d`].
#![deny(missing_docs)]

mod builder;
mod error;
pub mod library;
mod view;

pub use builder::KernelBuilder;
pub use error::KernelError;
pub use view::{DmaEnd, HbmView, ScalarArg, Step, Tensor, Tile, TileView};
