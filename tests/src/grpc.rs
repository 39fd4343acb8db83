//! What a server says about itself over gRPC: the services it lists through reflection, in
//! both protocol versions, and its health status for a service name.

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// One reflection version's `ListServices` exchange on `channel`: the names listed, sorted.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter([ask]))
            .await
            .expect("a reflection stream")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("an answer")
            .expect("one message");
        let mut names: Vec<String> = match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        };
        names.sort();
        names
    }};
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("a URI")
        .connect()
        .await
        .expect("a gRPC connection")
}

/// The services `address` lists through reflection v1 and v1alpha, each sorted.
pub async fn reflected_services(address: &str) -> [Vec<String>; 2] {
    let v1 = list_services!(v1, channel(address).await);
    let v1alpha = list_services!(v1alpha, channel(address).await);
    [v1, v1alpha]
}

/// `address`'s health status for `service` (`""`: the server as a whole), as the protocol's
/// number (1 SERVING, 2 NOT_SERVING), or the gRPC status code it answered with.
pub async fn health(address: &str, service: &str) -> Result<i32, tonic::Code> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    HealthClient::new(channel(address).await)
        .check(request)
        .await
        .map(|r| r.into_inner().status)
        .map_err(|status| status.code())
}
