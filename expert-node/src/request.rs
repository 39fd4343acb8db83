//! The protocol's messages to and from the node's core: a `LayerRequest` decoded and validated into
//! `LayerWork` (tensor checks, per-row precisions grouped per expert) and the reply dtype it asks
//! for, the node's errors as gRPC statuses, and the weighted sums packed into a `LayerReply`.

use moe_kernels::Format;
use moe_proto::expert::{
    ExpertPrecisions, ExpertWork, LayerReply, LayerRequest, Precision as WirePrecision, Tensor,
    Timings,
};
use moe_proto::tensor::{self, Limits, WireDtype};
use tonic::Status;

use crate::work::{ExpertRows, LayerWork, Precision, WorkError};

/// A wire precision as the core's; `PRECISION_UNSPECIFIED` (the proto default) means high.
pub fn precision(raw: i32) -> Result<Precision, Status> {
    let p = WirePrecision::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("unknown precision {raw}")))?;
    Ok(match p {
        WirePrecision::Unspecified | WirePrecision::High => Precision::High,
        WirePrecision::Low => Precision::Low,
        WirePrecision::F32 => Precision::Exact(Format::F32),
        WirePrecision::F16 => Precision::Exact(Format::F16),
        WirePrecision::Bf16 => Precision::Exact(Format::Bf16),
        WirePrecision::Q8 => Precision::Exact(Format::Q8),
        WirePrecision::Q4 => Precision::Exact(Format::Q4),
        WirePrecision::Q2 => Precision::Exact(Format::Q2),
        WirePrecision::Fp8 => Precision::Exact(Format::Fp8),
        WirePrecision::Mxfp4 => Precision::Exact(Format::Mxfp4),
    })
}

/// The wire name of the format a pair actually ran at.
pub fn wire_precision(format: Format) -> WirePrecision {
    match format {
        Format::F32 => WirePrecision::F32,
        Format::F16 => WirePrecision::F16,
        Format::Bf16 => WirePrecision::Bf16,
        Format::Q8 => WirePrecision::Q8,
        Format::Q4 => WirePrecision::Q4,
        Format::Q2 => WirePrecision::Q2,
        Format::Fp8 => WirePrecision::Fp8,
        Format::Mxfp4 => WirePrecision::Mxfp4,
    }
}

/// Decodes `req` for a node whose experts take `hidden`-wide rows: its layer's work and, when it
/// carries one, the later layer's work on the same rows. Rows of one expert that ask for
/// different precisions become one group per precision.
pub fn layer_work(
    req: &LayerRequest,
    hidden: usize,
    limits: &Limits,
) -> Result<(LayerWork, Option<LayerWork>), Status> {
    let tokens = req
        .tokens
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("layer request without tokens"))?;
    let rows = tensor::decode(tokens, hidden, limits)?;
    let ahead = match &req.ahead {
        None => None,
        Some(_) if req.per_pair => {
            let why = "a per-pair request carries no work for a later layer";
            return Err(Status::invalid_argument(why));
        }
        Some(a) if a.layer == req.layer => {
            return Err(Status::invalid_argument(format!(
                "ahead work for layer {} is the request's own layer",
                a.layer
            )));
        }
        Some(a) => Some(LayerWork {
            layer: a.layer,
            n_tokens: rows.rows,
            tokens: rows.data.clone(),
            experts: expert_groups(&a.experts)?,
        }),
    };
    let work = LayerWork {
        layer: req.layer,
        n_tokens: rows.rows,
        tokens: rows.data,
        experts: expert_groups(&req.experts)?,
    };
    Ok((work, ahead))
}

/// The wire's per-expert work as the core's groups: one per (expert, precision).
fn expert_groups(works: &[ExpertWork]) -> Result<Vec<ExpertRows>, Status> {
    let mut experts: Vec<ExpertRows> = Vec::new();
    for e in works {
        if e.rows.len() != e.weights.len() {
            return Err(WorkError::WeightCount {
                expert: e.expert,
                rows: e.rows.len(),
                weights: e.weights.len(),
            }
            .into());
        }
        let per_row = row_precisions(e)?;
        let unimportance = row_unimportance(e)?;
        let first = experts.len();
        for (((&row, &weight), p), u) in
            e.rows.iter().zip(&e.weights).zip(per_row).zip(unimportance)
        {
            let group = match experts[first..].iter().position(|g| g.precision == p) {
                Some(i) => first + i,
                None => {
                    experts.push(ExpertRows {
                        expert: e.expert,
                        rows: Vec::new(),
                        weights: Vec::new(),
                        precision: p,
                        unimportance: u,
                    });
                    experts.len() - 1
                }
            };
            let g = &mut experts[group];
            g.rows.push(row);
            g.weights.push(weight);
            g.unimportance = g.unimportance.min(u);
        }
    }
    Ok(experts)
}

/// Each row's precision: none given is high for all, one is for all, else one per row.
fn row_precisions(e: &ExpertWork) -> Result<Vec<Precision>, Status> {
    match e.precisions.len() {
        0 => Ok(vec![Precision::High; e.rows.len()]),
        1 => Ok(vec![precision(e.precisions[0])?; e.rows.len()]),
        n if n == e.rows.len() => e.precisions.iter().map(|&p| precision(p)).collect(),
        n => Err(Status::invalid_argument(format!(
            "expert {}: {n} precisions for {} rows (give one, or one per row)",
            e.expert,
            e.rows.len()
        ))),
    }
}

/// Each row's HOBBIT unimportance, in [0, 1]: none given is 0 for all, else one per row.
fn row_unimportance(e: &ExpertWork) -> Result<Vec<f32>, Status> {
    let unimportance = match e.unimportance.len() {
        0 => vec![0.0; e.rows.len()],
        n if n == e.rows.len() => e.unimportance.clone(),
        n => {
            return Err(Status::invalid_argument(format!(
                "expert {}: {n} unimportance scores for {} rows (give none, or one per row)",
                e.expert,
                e.rows.len()
            )));
        }
    };
    if let Some(bad) = unimportance.iter().find(|u| !(0.0..=1.0).contains(*u)) {
        return Err(Status::invalid_argument(format!(
            "expert {}: unimportance {bad} is outside [0, 1]",
            e.expert
        )));
    }
    Ok(unimportance)
}

/// The dtype `req` asks its reply to travel as (f32 unless it says otherwise).
pub fn reply_dtype(req: &LayerRequest) -> Result<WireDtype, Status> {
    WireDtype::requested(req.reply_dtype)
        .map_err(|e| Status::invalid_argument(format!("reply_dtype: {e}")))
}

impl From<WorkError> for Status {
    fn from(e: WorkError) -> Status {
        match e {
            // The gateway should retry on a replica that holds it.
            WorkError::NotHeld { .. } => Status::failed_precondition(e.to_string()),
            // The gateway should refresh its placement and route the work again.
            WorkError::StaleEpoch(_) => Status::aborted(e.to_string()),
            WorkError::Kernel(_) | WorkError::Expert(_) | WorkError::Shard(_) => {
                Status::internal(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// One layer's work as it ran: per-token weighted sums (or outputs per pair) and the format
/// each of its groups ran at.
pub struct Ran<'a> {
    pub work: &'a LayerWork,
    pub out: &'a [f32],
    pub used: &'a [Format],
}

impl Ran<'_> {
    fn output(&self, hidden: usize, dtype: WireDtype) -> Result<Tensor, Status> {
        let rows = self.out.len() / hidden.max(1);
        Ok(tensor::encode(self.out, rows, hidden, dtype)?)
    }

    fn precisions(&self) -> Vec<ExpertPrecisions> {
        let groups = self.work.experts.iter().zip(self.used);
        groups
            .map(|(e, &format)| ExpertPrecisions {
                expert: e.expert,
                used: vec![wire_precision(format) as i32; e.rows.len()],
            })
            .collect()
    }
}

/// Packs a request's layer as it `ran`, and its later layer's when it carried one, into a reply.
pub fn reply(
    batch_id: u64,
    ran: Ran<'_>,
    ahead: Option<Ran<'_>>,
    hidden: usize,
    dtype: WireDtype,
    timings: Timings,
) -> Result<LayerReply, Status> {
    let (ahead_output, ahead_precisions) = match &ahead {
        Some(a) => (Some(a.output(hidden, dtype)?), a.precisions()),
        None => (None, Vec::new()),
    };
    Ok(LayerReply {
        batch_id,
        layer: ran.work.layer,
        output: Some(ran.output(hidden, dtype)?),
        precisions: ran.precisions(),
        timings: Some(timings),
        ahead_output,
        ahead_precisions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::{Epoch, StaleEpoch};
    use crate::work::{ExpertSet, PrecisionPair};
    use moe_proto::expert::AheadWork;

    const HIDDEN: usize = 4;

    #[test]
    fn every_format_crosses_the_wire_both_ways() {
        for format in Format::ALL {
            let wire = wire_precision(format);
            assert_eq!(precision(wire as i32).unwrap(), Precision::Exact(format));
        }
        assert_eq!(wire_precision(Format::Mxfp4) as i32, 10);
    }

    fn request(experts: Vec<ExpertWork>) -> LayerRequest {
        let tokens: Vec<f32> = (0..3 * HIDDEN).map(|i| i as f32 * 0.25).collect();
        LayerRequest {
            batch_id: 7,
            epoch: 1,
            layer: 2,
            tokens: Some(tensor::encode(&tokens, 3, HIDDEN, WireDtype::F32).unwrap()),
            experts,
            reply_dtype: 0,
            per_pair: false,
            traceparent: String::new(),
            ahead: None,
        }
    }

    fn expert(expert: u32, rows: Vec<u32>, precisions: Vec<WirePrecision>) -> ExpertWork {
        ExpertWork {
            expert,
            weights: rows.iter().map(|&r| 0.1 * (r + 1) as f32).collect(),
            rows,
            precisions: precisions.into_iter().map(|p| p as i32).collect(),
            unimportance: Vec::new(),
        }
    }

    #[test]
    fn decodes_tokens_and_groups_rows_by_precision() {
        use WirePrecision::*;
        let req = request(vec![
            expert(0, vec![0, 1, 2], vec![High, Low, High]),
            expert(5, vec![2], vec![Q8]),
            expert(6, vec![1], vec![]),
        ]);
        let (work, ahead) = layer_work(&req, HIDDEN, &Limits::default()).unwrap();
        assert!(ahead.is_none());
        assert_eq!((work.layer, work.n_tokens, work.tokens.len()), (2, 3, 12));
        assert_eq!(work.tokens[5], 1.25);
        let groups: Vec<(u32, Vec<u32>, Precision)> = work
            .experts
            .iter()
            .map(|e| (e.expert, e.rows.clone(), e.precision))
            .collect();
        assert_eq!(
            groups,
            vec![
                (0, vec![0, 2], Precision::High),
                (0, vec![1], Precision::Low),
                (5, vec![2], Precision::Exact(Format::Q8)),
                (6, vec![1], Precision::High),
            ]
        );
        assert_eq!(work.experts[0].weights, vec![0.1, 0.3]);
    }

    #[test]
    fn malformed_requests_get_precise_statuses() {
        use tonic::Code;
        let limits = Limits::default();
        let code = |req: LayerRequest| layer_work(&req, HIDDEN, &limits).unwrap_err().code();
        let mut no_tokens = request(vec![]);
        no_tokens.tokens = None;
        assert_eq!(code(no_tokens), Code::InvalidArgument);
        let wide = layer_work(&request(vec![]), HIDDEN + 1, &limits).unwrap_err();
        assert_eq!(wide.code(), Code::InvalidArgument);
        assert!(wide.message().contains("columns"), "{}", wide.message());
        let mut bad = expert(1, vec![0, 1], vec![]);
        bad.weights.pop();
        assert_eq!(code(request(vec![bad])), Code::InvalidArgument);
        let two_for_three = expert(
            1,
            vec![0, 1, 2],
            vec![WirePrecision::High, WirePrecision::Low],
        );
        assert_eq!(code(request(vec![two_for_three])), Code::InvalidArgument);
        let mut unknown = expert(1, vec![0], vec![]);
        unknown.precisions = vec![42];
        assert_eq!(code(request(vec![unknown])), Code::InvalidArgument);
        let tight = Limits {
            max_rows: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            layer_work(&request(vec![]), HIDDEN, &tight)
                .unwrap_err()
                .code(),
            Code::ResourceExhausted
        );
        let not_held = WorkError::NotHeld {
            layer: 0,
            expert: 1,
            format: Format::Q4,
        };
        assert_eq!(Status::from(not_held).code(), Code::FailedPrecondition);
        let stale = WorkError::StaleEpoch(StaleEpoch {
            request: Epoch(3),
            node: Epoch(4),
        });
        assert_eq!(Status::from(stale).code(), Code::Aborted);

        let mut odd_dtype = request(vec![]);
        assert_eq!(reply_dtype(&odd_dtype).unwrap(), WireDtype::F32);
        odd_dtype.reply_dtype = moe_proto::expert::Dtype::I8RowScaled as i32;
        assert_eq!(reply_dtype(&odd_dtype).unwrap(), WireDtype::I8RowScaled);
        odd_dtype.reply_dtype = 42;
        let unknown = reply_dtype(&odd_dtype).unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument);
        assert!(unknown.message().contains("42"), "{}", unknown.message());
    }

    #[test]
    fn ahead_work_is_a_later_layer_on_the_same_rows() {
        use tonic::Code;
        let mut req = request(vec![expert(0, vec![0], vec![])]);
        req.ahead = Some(AheadWork {
            layer: 3,
            experts: vec![expert(4, vec![1, 2], vec![WirePrecision::Low])],
        });
        let (work, ahead) = layer_work(&req, HIDDEN, &Limits::default()).unwrap();
        let ahead = ahead.expect("the request carries ahead work");
        assert_eq!((work.layer, ahead.layer), (2, 3));
        assert_eq!(ahead.tokens, work.tokens);
        assert_eq!(ahead.n_tokens, 3);
        assert_eq!(ahead.experts[0].expert, 4);
        assert_eq!(ahead.experts[0].rows, vec![1, 2]);
        assert_eq!(ahead.experts[0].precision, Precision::Low);

        let limits = Limits::default();
        let mut same = req.clone();
        same.ahead.as_mut().unwrap().layer = 2;
        let refused = layer_work(&same, HIDDEN, &limits).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().contains("own layer"),
            "{}",
            refused.message()
        );
        let mut per_pair = req.clone();
        per_pair.per_pair = true;
        let refused = layer_work(&per_pair, HIDDEN, &limits).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        let mut short = req;
        short.ahead.as_mut().unwrap().experts[0].weights.pop();
        let refused = layer_work(&short, HIDDEN, &limits).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }

    #[test]
    fn replies_carry_sums_and_precisions_used() {
        let req = request(vec![expert(3, vec![0, 2], vec![WirePrecision::Low])]);
        let (work, _) = layer_work(&req, HIDDEN, &Limits::default()).unwrap();
        let out: Vec<f32> = (0..3 * HIDDEN).map(|i| i as f32).collect();
        let pair = PrecisionPair {
            high: Format::F16,
            low: Format::Q4,
        };
        let timings = Timings {
            queue_us: 3,
            compute_us: 40,
            load_us: 0,
        };
        let used = ExpertSet::new(HIDDEN).used(&work, pair);
        let ran = Ran {
            work: &work,
            out: &out,
            used: &used,
        };
        let r = reply(7, ran, None, HIDDEN, WireDtype::F32, timings).unwrap();
        assert_eq!((r.batch_id, r.layer), (7, 2));
        assert_eq!(r.precisions[0].used, vec![WirePrecision::Q4 as i32; 2]);
        let back = tensor::decode(r.output.as_ref().unwrap(), HIDDEN, &Limits::default()).unwrap();
        assert_eq!(back.data, out);
        assert!(r.ahead_output.is_none() && r.ahead_precisions.is_empty());

        let doubled: Vec<f32> = out.iter().map(|v| 2.0 * v).collect();
        let ahead = Ran {
            work: &work,
            out: &doubled,
            used: &used,
        };
        let ran = Ran {
            work: &work,
            out: &out,
            used: &used,
        };
        let r = reply(8, ran, Some(ahead), HIDDEN, WireDtype::F32, timings).unwrap();
        let back = r.ahead_output.as_ref().unwrap();
        let back = tensor::decode(back, HIDDEN, &Limits::default()).unwrap();
        assert_eq!(back.data, doubled);
        assert_eq!(
            r.ahead_precisions[0].used,
            vec![WirePrecision::Q4 as i32; 2]
        );
    }
}
