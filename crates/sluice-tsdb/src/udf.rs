//! `time_bucket(interval, ts [, origin])`, TimescaleDB's bucketing function, on top of DataFusion's `date_bin`.
//!
//! The interval may be a string (`'5 minutes'`, `'1 week'`) or an `INTERVAL`; the result has the type of `ts`.
//! Like TimescaleDB the default origin is Monday 2000-01-03T00:00:00Z (so week buckets start on Mondays), or
//! 2000-01-01 for month intervals. The planner rewrites every call to
//! `date_bin(CAST(interval AS INTERVAL), ts, origin)` (see [`ScalarUDFImpl::simplify`]) so it gets everything
//! `date_bin` has (order preservation, literal folding); `invoke_with_args` delegates to `date_bin` for the
//! rare paths that skip the simplifier.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// 2000-01-03T00:00:00Z (a Monday) in nanoseconds: TimescaleDB's default origin.
pub const DEFAULT_ORIGIN_NS: i64 = 946_857_600_000_000_000;
/// 2000-01-01T00:00:00Z in nanoseconds: TimescaleDB's default origin for month intervals.
pub const MONTH_ORIGIN_NS: i64 = 946_684_800_000_000_000;

/// The `time_bucket` scalar function, ready for `SessionContext::register_udf`.
pub fn time_bucket_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(TimeBucket::new())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> Self {
        // User-defined so `coerce_types` decides: strings become intervals, origins follow the timestamp's zone.
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

/// The type a `ts` argument is coerced to.
fn coerce_ts(arg: &DataType) -> Result<DataType> {
    match arg {
        DataType::Timestamp(unit, tz) => Ok(DataType::Timestamp(*unit, tz.clone())),
        DataType::Date32
        | DataType::Date64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Null => Ok(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        other => plan_err!("time_bucket: the second argument must be a timestamp, got {other}"),
    }
}

/// Whether `expr` is a literal interval with a month part (those buckets count from 2000-01-01).
fn is_month_interval(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months != 0)
        || matches!(expr, Expr::Literal(ScalarValue::IntervalYearMonth(Some(m)), _) if *m != 0)
}

fn default_origin(month_interval: bool, ts_type: &DataType) -> ScalarValue {
    let tz = match ts_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let origin = if month_interval { MONTH_ORIGIN_NS } else { DEFAULT_ORIGIN_NS };
    ScalarValue::TimestampNanosecond(Some(origin), tz)
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!("time_bucket takes 2 or 3 arguments (interval, ts [, origin]), got {}", arg_types.len());
        }
        let interval = match &arg_types[0] {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Interval(_) | DataType::Null => {
                INTERVAL
            }
            other => return plan_err!("time_bucket: the first argument must be an interval or a string, got {other}"),
        };
        let ts = coerce_ts(&arg_types[1])?;
        let mut out = vec![interval, ts.clone()];
        if arg_types.len() == 3 {
            // date_bin wants a nanosecond origin; keep the zone of `ts` so the types line up.
            let tz = match &ts {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            out.push(DataType::Timestamp(TimeUnit::Nanosecond, tz));
        }
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(ts) => coerce_ts(ts),
            None => plan_err!("time_bucket takes 2 or 3 arguments (interval, ts [, origin])"),
        }
    }

    fn simplify(&self, mut args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if args.len() == 2 {
            let Ok(ts_type) = info.get_data_type(&args[1]) else {
                return Ok(ExprSimplifyResult::Original(args));
            };
            let origin = default_origin(is_month_interval(&args[0]), &ts_type);
            args.push(lit(origin));
        }
        let date_bin = datafusion::functions::datetime::date_bin();
        Ok(ExprSimplifyResult::Simplified(Expr::ScalarFunction(ScalarFunction::new_udf(date_bin, args))))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() == 2 {
            let month = matches!(
                &args.args[0],
                ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months != 0
            );
            let origin = default_origin(month, args.arg_fields[1].data_type());
            args.arg_fields.push(Arc::new(Field::new("origin", origin.data_type(), false)));
            args.args.push(ColumnarValue::Scalar(origin));
        }
        datafusion::functions::datetime::date_bin().invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
    use datafusion::prelude::SessionContext;

    /// Runs `sql` with `time_bucket` registered and returns the single timestamp column as ms.
    async fn bucket_ms(sql: &str) -> Vec<Option<i64>> {
        let ctx = SessionContext::new();
        ctx.register_udf(time_bucket_udf());
        let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for batch in batches {
            let col =
                arrow::compute::cast(batch.column(0), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))
                    .unwrap();
            let col = col.as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
            out.extend((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i))));
        }
        out
    }

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    #[tokio::test]
    async fn string_and_interval_forms_match_hand_computed_buckets() {
        let sql = "SELECT time_bucket('1 minute', arrow_cast(ts, 'Timestamp(Millisecond, Some(\"UTC\"))')) FROM \
                   (VALUES (TIMESTAMP '2026-11-28T10:03:59.999Z'), (TIMESTAMP '1969-12-31T23:59:30Z'), (NULL)) t(ts)";
        assert_eq!(
            bucket_ms(sql).await,
            vec![Some(ms("2026-11-28T10:03:00Z")), Some(ms("1969-12-31T23:59:00Z")), None]
        );
        let sql = "SELECT time_bucket(INTERVAL '5 minutes', TIMESTAMP '1969-12-31T23:57:30Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("1969-12-31T23:55:00Z"))]);
        // A bucket ending before the epoch: -1 ms is in the bucket starting one hour before the epoch.
        let sql = "SELECT time_bucket('1 hour', arrow_cast(-1, 'Timestamp(Millisecond, None)'))";
        assert_eq!(bucket_ms(sql).await, vec![Some(-3_600_000)]);
    }

    #[tokio::test]
    async fn week_buckets_start_on_monday_and_origin_is_honoured() {
        // 2026-11-26 is a Thursday; its week starts on Monday 2026-11-23.
        let sql = "SELECT time_bucket('1 week', TIMESTAMP '2026-11-26T12:00:00Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("2026-11-23T00:00:00Z"))]);
        // 1970-01-01 is a Thursday too: before the epoch, its week starts on Monday 1969-12-29.
        let sql = "SELECT time_bucket('1 week', TIMESTAMP '1970-01-01T05:00:00Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("1969-12-29T00:00:00Z"))]);
        let sql = "SELECT time_bucket('1 day', TIMESTAMP '2026-11-26T02:00:00Z', TIMESTAMP '2000-01-01T03:00:00Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("2026-11-25T03:00:00Z"))]);
        let sql = "SELECT time_bucket('1 day', TIMESTAMP '2026-11-26T02:00:00Z', '2000-01-01T03:00:00Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("2026-11-25T03:00:00Z"))]);
        let sql = "SELECT time_bucket('1 month', TIMESTAMP '2026-11-26T02:00:00Z')";
        assert_eq!(bucket_ms(sql).await, vec![Some(ms("2026-11-01T00:00:00Z"))]);
    }

    #[tokio::test]
    async fn keeps_the_timestamp_type_and_date_bin_still_works() {
        let ctx = SessionContext::new();
        ctx.register_udf(time_bucket_udf());
        let df = ctx
            .sql(
                "SELECT time_bucket('1 hour', arrow_cast(TIMESTAMP '2026-01-01T10:30:00Z', \
                 'Timestamp(Millisecond, Some(\"UTC\"))')) AS b, \
                 date_bin(INTERVAL '15 minutes', TIMESTAMP '2026-01-01T10:31:00Z') AS d",
            )
            .await
            .unwrap();
        let schema = df.schema().as_arrow().clone();
        assert_eq!(schema.field(0).data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
        let batches = df.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("2026-01-01T10:00:00Z"), "{text}");
        assert!(text.contains("2026-01-01T10:30:00"), "{text}");
    }

    #[tokio::test]
    async fn bad_arguments_are_planning_errors() {
        let ctx = SessionContext::new();
        ctx.register_udf(time_bucket_udf());
        let err = ctx.sql("SELECT time_bucket(5, TIMESTAMP '2026-01-01T00:00:00Z')").await.unwrap_err();
        assert!(err.to_string().contains("interval"), "{err}");
        let err = ctx.sql("SELECT time_bucket('1 hour')").await.unwrap_err();
        assert!(err.to_string().contains("time_bucket"), "{err}");
    }
}
