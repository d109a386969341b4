//! The four PromQL value types.

use crate::store::{Labels, Sample};

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation timestamp, milliseconds.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in time order.
    pub samples: Vec<Sample>,
}

/// A PromQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number at a time.
    Scalar {
        /// Milliseconds.
        t: i64,
        /// The number.
        v: f64,
    },
    /// A string at a time.
    String {
        /// Milliseconds.
        t: i64,
        /// The string.
        v: String,
    },
    /// An instant vector.
    Vector(Vec<InstantSample>),
    /// A range vector.
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus' name of the type (`resultType` in the API).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Scalar { .. } => "scalar",
            Self::String { .. } => "string",
            Self::Vector(_) => "vector",
            Self::Matrix(_) => "matrix",
        }
    }
}
