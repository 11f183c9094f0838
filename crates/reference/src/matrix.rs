//! Strided row-major matrix views.
//!
//! Every activation and output in qlinear is a view: `rows x cols` elements, row `i`
//! starting at `i * stride`. Views of sub-matrices (a stride larger than `cols`) are
//! first-class; the last row only needs `cols` elements, not `stride`.

use crate::params::{Error, Result};

fn required_len(what: &'static str, rows: usize, cols: usize, stride: usize) -> Result<usize> {
    if stride < cols && rows > 1 {
        return Err(Error::Stride { what, stride, cols });
    }
    if rows == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(cols))
        .ok_or(Error::Dimension("matrix extent overflows usize"))
}

/// An immutable strided view.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A view of `rows x cols` with row stride `stride` (in elements).
    pub fn new(data: &'a [T], rows: usize, cols: usize, stride: usize) -> Result<Self> {
        let needed = required_len("input", rows, cols, stride)?;
        if data.len() < needed {
            return Err(Error::BufferTooSmall {
                what: "input",
                needed,
                len: data.len(),
                rows,
                cols,
                stride,
            });
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            stride: stride.max(cols),
        })
    }

    /// A dense view (`stride == cols`).
    pub fn dense(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// The backing slice (starting at element (0, 0)).
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
    /// Row `i` (exactly `cols` elements).
    ///
    /// # Panics
    /// If `i >= rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.stride..i * self.stride + self.cols]
    }
    /// Rows `[begin, end)` as a view; an error when the range is not inside the view.
    pub fn row_range(&self, begin: usize, end: usize) -> Result<MatRef<'a, T>> {
        if end > self.rows {
            return Err(Error::Shape {
                what: "row range end (rows)",
                expected: self.rows,
                got: end,
            });
        }
        if begin > end {
            return Err(Error::Dimension("row range begins after it ends"));
        }
        let start = (begin * self.stride).min(self.data.len());
        Ok(MatRef {
            data: &self.data[start..],
            rows: end - begin,
            cols: self.cols,
            stride: self.stride,
        })
    }
}

/// A mutable strided view.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// A view of `rows x cols` with row stride `stride` (in elements).
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, stride: usize) -> Result<Self> {
        let needed = required_len("output", rows, cols, stride)?;
        if data.len() < needed {
            return Err(Error::BufferTooSmall {
                what: "output",
                needed,
                len: data.len(),
                rows,
                cols,
                stride,
            });
        }
        Ok(MatMut {
            data,
            rows,
            cols,
            stride: stride.max(cols),
        })
    }

    /// A dense view (`stride == cols`).
    pub fn dense(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Row `i`, mutable.
    ///
    /// # Panics
    /// If `i >= rows()`, like slice indexing.
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.stride..i * self.stride + self.cols]
    }
    /// The backing slice (starting at element (0, 0)).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data
    }
    /// Reborrows as a shorter-lived view.
    pub fn reborrow(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }
}
