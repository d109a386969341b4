//! Function name tables: which PromQL functions exist, what they map to, and which depend on
//! the evaluation time (and so are never step invariant).

use super::{DateFn, RangeFn};
use crate::promql::math;

/// Functions whose value depends on the evaluation time itself: never step invariant.
pub(super) fn time_dependent(name: &str) -> bool {
    matches!(
        name,
        "days_in_month"
            | "day_of_month"
            | "day_of_week"
            | "day_of_year"
            | "hour"
            | "minute"
            | "month"
            | "year"
            | "predict_linear"
            | "time"
            | "timestamp"
    )
}

pub(super) fn simple_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => math::sgn,
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => math::deg,
        "rad" => math::rad,
        _ => return None,
    })
}

pub(super) fn range_fn(name: &str) -> Option<RangeFn> {
    Some(match name {
        "rate" => RangeFn::Rate,
        "increase" => RangeFn::Increase,
        "delta" => RangeFn::Delta,
        "irate" => RangeFn::Irate,
        "idelta" => RangeFn::Idelta,
        "avg_over_time" => RangeFn::AvgOverTime,
        "min_over_time" => RangeFn::MinOverTime,
        "max_over_time" => RangeFn::MaxOverTime,
        "sum_over_time" => RangeFn::SumOverTime,
        "count_over_time" => RangeFn::CountOverTime,
        "quantile_over_time" => RangeFn::QuantileOverTime,
        "stddev_over_time" => RangeFn::StddevOverTime,
        "stdvar_over_time" => RangeFn::StdvarOverTime,
        "mad_over_time" => RangeFn::MadOverTime,
        "last_over_time" => RangeFn::LastOverTime,
        "first_over_time" => RangeFn::FirstOverTime,
        "present_over_time" => RangeFn::PresentOverTime,
        "absent_over_time" => RangeFn::AbsentOverTime,
        "changes" => RangeFn::Changes,
        "resets" => RangeFn::Resets,
        "deriv" => RangeFn::Deriv,
        "predict_linear" => RangeFn::PredictLinear,
        "holt_winters" | "double_exponential_smoothing" => RangeFn::HoltWinters,
        _ => return None,
    })
}

pub(super) fn date_fn(name: &str) -> Option<DateFn> {
    Some(match name {
        "day_of_month" => DateFn::DayOfMonth,
        "day_of_week" => DateFn::DayOfWeek,
        "day_of_year" => DateFn::DayOfYear,
        "days_in_month" => DateFn::DaysInMonth,
        "hour" => DateFn::Hour,
        "minute" => DateFn::Minute,
        "month" => DateFn::Month,
        "year" => DateFn::Year,
        _ => return None,
    })
}
