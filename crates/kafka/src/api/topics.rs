//! CreateTopics (19), DeleteTopics (20) and CreatePartitions (37): admin changes forwarded to
//! the controller and answered once committed and applied on this broker.

use std::sync::Arc;

use ferrymq_cluster::{ControllerError, CreateTopic};
use ferrymq_types::NodeId;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::configs::topic_config_entries;
use super::{str_bytes, topic_name};
use crate::context::ServerContext;
use crate::errors;

fn failure(e: &ControllerError) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (errors::controller(e).code(), Some(str_bytes(e.to_string())))
}

/// CreateTopics: each topic is created (or validated) independently.
pub async fn create_topics(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        if !seen.insert(name.clone()) {
            // Kafka refuses a topic named twice in one request.
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "topic named more than once in the request",
                    ))),
            );
            continue;
        }
        let assignments = (!t.assignments.is_empty()).then(|| {
            let mut a: Vec<_> = t.assignments.iter().collect();
            a.sort_by_key(|x| x.partition_index);
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| NodeId(b.0)).collect())
                .collect()
        });
        let configs = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let create = CreateTopic {
            name: name.clone(),
            num_partitions: (t.num_partitions != -1).then_some(t.num_partitions),
            replication_factor: (t.replication_factor != -1).then_some(t.replication_factor),
            assignments,
            configs,
        };
        match ctx
            .broker
            .controller()
            .create_topic(create, req.validate_only)
            .await
        {
            Ok(created) => {
                if !req.validate_only {
                    tracing::info!(
                        topic = name,
                        partitions = created.num_partitions,
                        "topic created"
                    );
                }
                let explicit = ctx
                    .broker
                    .metadata()
                    .topic(&name)
                    .map(|t| t.configs.clone())
                    .unwrap_or_default();
                let defaults = &ctx.broker.config().topic_defaults;
                let configs = topic_config_entries(&explicit, defaults)
                    .into_iter()
                    .map(|(def, value, source)| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(def.name))
                            .with_value(Some(str_bytes(value)))
                            .with_config_source(source)
                    })
                    .collect();
                results.push(
                    result
                        .with_topic_id(if req.validate_only {
                            uuid::Uuid::nil()
                        } else {
                            created.id
                        })
                        .with_num_partitions(created.num_partitions)
                        .with_replication_factor(created.replication_factor)
                        .with_configs(Some(configs)),
                );
            }
            Err(e) => {
                let (code, msg) = failure(&e);
                results.push(
                    result
                        .with_error_code(code)
                        .with_error_message(msg)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_configs(None),
                );
            }
        }
    }
    ctx.broker.sync_metadata();
    CreateTopicsResponse::default().with_topics(results)
}

/// DeleteTopics: by name (all versions) or by id (v6).
pub async fn delete_topics(
    ctx: &Arc<ServerContext>,
    header: &RequestHeader,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = Vec::new();
    if header.request_api_version >= 6 {
        targets.extend(
            req.topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
        );
    } else {
        targets.extend(
            req.topic_names
                .iter()
                .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())),
        );
    }
    let mut responses = Vec::new();
    for (name, id) in targets {
        let image = ctx.broker.metadata();
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => image.topic_names.get(&id).cloned(),
        };
        let result = DeletableTopicResult::default()
            .with_name(resolved.as_deref().map(topic_name))
            .with_topic_id(id);
        let Some(resolved) = resolved else {
            responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        match ctx.broker.controller().delete_topic(&resolved).await {
            Ok(deleted) => {
                tracing::info!(topic = resolved, "topic deleted");
                responses.push(result.with_topic_id(deleted));
            }
            Err(e) => {
                let (code, msg) = failure(&e);
                responses.push(result.with_error_code(code).with_error_message(msg));
            }
        }
    }
    ctx.broker.sync_metadata();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// CreatePartitions: grows topics to a new partition count.
pub async fn create_partitions(
    ctx: &Arc<ServerContext>,
    _header: &RequestHeader,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let assignments = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| NodeId(b.0)).collect())
                .collect()
        });
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        match ctx
            .broker
            .controller()
            .create_partitions(t.name.0.as_str(), t.count, assignments, req.validate_only)
            .await
        {
            Ok(()) => results.push(result),
            Err(e) => {
                let (code, msg) = failure(&e);
                results.push(result.with_error_code(code).with_error_message(msg));
            }
        }
    }
    ctx.broker.sync_metadata();
    CreatePartitionsResponse::default().with_results(results)
}
