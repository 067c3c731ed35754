//! DescribeConfigs (32), AlterConfigs (33) and IncrementalAlterConfigs (44). Topic configs are
//! described with their effective value and source and changed through the controller; the
//! broker's own settings are described read-only (they come from its file, env and flags).

use std::sync::Arc;

use ferrymq_cluster::topic_config::{ConfigKind, TopicConfigDef, TOPIC_CONFIGS};
use ferrymq_cluster::{ConfigOp, TopicDefaults};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::context::ServerContext;
use crate::errors;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's `ConfigSource` values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Each topic config with its effective value and where that value comes from.
pub fn topic_config_entries(
    explicit: &ferrymq_cluster::records::TopicConfigs,
    defaults: &TopicDefaults,
) -> Vec<(&'static TopicConfigDef, String, i8)> {
    TOPIC_CONFIGS
        .iter()
        .filter_map(|def| match explicit.get(def.name) {
            Some(v) => Some((def, v.clone(), SOURCE_DYNAMIC_TOPIC)),
            None => defaults
                .get(def.name)
                .map(|v| (def, v.to_string(), SOURCE_DEFAULT)),
        })
        .collect()
}

fn config_type(kind: ConfigKind, name: &str) -> i8 {
    // Kafka's ConfigType: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
    match kind {
        ConfigKind::Bool => 1,
        ConfigKind::Int { .. } => 3,
        ConfigKind::Long { .. } => 5,
        ConfigKind::Choice(_) if name == "cleanup.policy" => 7,
        ConfigKind::Choice(_) => 2,
        ConfigKind::Ratio => 6,
    }
}

/// DescribeConfigs.
pub async fn describe(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let image = ctx.broker.metadata();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = image.topic(r.resource_name.as_str()) else {
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "unknown topic {}",
                                r.resource_name.as_str()
                            ))));
                    };
                    let configs =
                        topic_config_entries(&topic.configs, &ctx.broker.config().topic_defaults)
                            .into_iter()
                            .filter(|(def, _, _)| wanted(def.name))
                            .map(|(def, value, source)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(def.name))
                                    .with_value(Some(str_bytes(value)))
                                    .with_config_source(source)
                                    .with_config_type(config_type(def.kind, def.name))
                                    .with_documentation(
                                        req.include_documentation.then(|| str_bytes(def.doc)),
                                    )
                            })
                            .collect();
                    base.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let own = ctx.broker.config().node_id.0.to_string();
                    if !r.resource_name.is_empty() && r.resource_name.as_str() != own {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes(format!("this is broker {own}"))));
                    }
                    let configs = ctx
                        .config
                        .broker_settings
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k.clone()))
                                .with_value(Some(str_bytes(v.clone())))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                                .with_config_type(2)
                        })
                        .collect();
                    base.with_configs(configs)
                }
                other => base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "unsupported resource type {other}"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The error code and message of changing one resource.
fn outcome(result: Result<(), (ResponseError, String)>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err((e, msg)) => (e.code(), Some(str_bytes(msg))),
    }
}

async fn apply(
    ctx: &Arc<ServerContext>,
    resource_type: i8,
    name: &StrBytes,
    ops: Result<Vec<ConfigOp>, (ResponseError, String)>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest,
            "only topic configs can be changed at runtime; broker settings come from the config file, env and flags".into(),
        ));
    }
    let ops = ops?;
    ctx.broker
        .controller()
        .alter_topic_configs(name.as_str(), ops, validate_only)
        .await
        .map_err(|e| (errors::controller(&e), e.to_string()))?;
    ctx.broker.sync_metadata();
    Ok(())
}

/// AlterConfigs: the given set replaces the topic's explicit configs.
pub async fn alter(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in &req.resources {
        let image = ctx.broker.metadata();
        let ops = match image.topic(r.resource_name.as_str()) {
            None if r.resource_type == RESOURCE_TOPIC => Err((
                ResponseError::UnknownTopicOrPartition,
                "unknown topic".to_string(),
            )),
            None => Ok(Vec::new()),
            Some(topic) => {
                let mut ops: Vec<ConfigOp> = r
                    .configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(v) => ConfigOp::Set(c.name.to_string(), v.to_string()),
                        None => ConfigOp::Delete(c.name.to_string()),
                    })
                    .collect();
                for existing in topic.configs.keys() {
                    if !r.configs.iter().any(|c| c.name.as_str() == existing) {
                        ops.push(ConfigOp::Delete(existing.clone()));
                    }
                }
                Ok(ops)
            }
        };
        let (code, msg) = outcome(
            apply(
                ctx,
                r.resource_type,
                &r.resource_name,
                ops,
                req.validate_only,
            )
            .await,
        );
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(msg),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET (0) and DELETE (1); APPEND (2) and SUBTRACT (3) for the one
/// list-typed config, `cleanup.policy`.
pub async fn incremental_alter(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in &req.resources {
        let image = ctx.broker.metadata();
        let current = image
            .topic(r.resource_name.as_str())
            .map(|t| t.configs.clone());
        let ops: Result<Vec<ConfigOp>, (ResponseError, String)> = r
            .configs
            .iter()
            .map(|c| {
                let name = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                match c.config_operation {
                    0 => Ok(ConfigOp::Set(name, value)),
                    1 => Ok(ConfigOp::Delete(name)),
                    2 | 3 if name == "cleanup.policy" => {
                        let existing = current
                            .as_ref()
                            .and_then(|cfg| cfg.get(&name).cloned())
                            .or_else(|| {
                                ctx.broker
                                    .config()
                                    .topic_defaults
                                    .get(&name)
                                    .map(str::to_string)
                            })
                            .unwrap_or_default();
                        let mut items: Vec<String> = existing
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect();
                        for v in value.split(',').filter(|s| !s.is_empty()) {
                            if c.config_operation == 2 && !items.iter().any(|i| i == v) {
                                items.push(v.to_string());
                            } else if c.config_operation == 3 {
                                items.retain(|i| i != v);
                            }
                        }
                        Ok(ConfigOp::Set(name, items.join(",")))
                    }
                    2 | 3 => Err((
                        ResponseError::InvalidConfig,
                        format!("{name} is not a list config"),
                    )),
                    op => Err((
                        ResponseError::InvalidRequest,
                        format!("unknown config operation {op}"),
                    )),
                }
            })
            .collect();
        let ops = match current {
            None if r.resource_type == RESOURCE_TOPIC => Err((
                ResponseError::UnknownTopicOrPartition,
                "unknown topic".to_string(),
            )),
            _ => ops,
        };
        let (code, msg) = outcome(
            apply(
                ctx,
                r.resource_type,
                &r.resource_name,
                ops,
                req.validate_only,
            )
            .await,
        );
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(msg),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
