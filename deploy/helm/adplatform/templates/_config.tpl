{{/* The shared ConfigMap's data; also hashed into every pod's checksum/config annotation. */}}
{{- define "adplatform.configData" -}}
ENVIRONMENT: {{ .Values.config.environment | quote }}
LOG_LEVEL: {{ .Values.config.log.level | quote }}
HTTP_HOST: "0.0.0.0"
HTTP_PORT: {{ .Values.ports.http | quote }}
METRICS_ENABLED: {{ .Values.config.metrics.enabled | quote }}
METRICS_PORT: {{ .Values.ports.metrics | quote }}
REDIS_HOST: {{ include "adplatform.redisHost" . | quote }}
REDIS_PORT: {{ ternary .Values.redis.cluster.port .Values.redis.external.port .Values.redis.enabled | quote }}
REDIS_CLUSTER: {{ ternary true .Values.redis.external.cluster .Values.redis.enabled | quote }}
{{- if and .Values.redis.enabled (gt (int .Values.redis.cluster.waitReplicas) (int .Values.redis.cluster.replicasPerMaster)) }}
{{- fail (printf "redis.cluster.waitReplicas (%v) exceeds redis.cluster.replicasPerMaster (%v): no budget write could ever be confirmed" .Values.redis.cluster.waitReplicas .Values.redis.cluster.replicasPerMaster) }}
{{- end }}
REDIS_WAIT_REPLICAS: {{ ternary .Values.redis.cluster.waitReplicas .Values.redis.external.waitReplicas .Values.redis.enabled | quote }}
KAFKA_BROKERS: {{ include "adplatform.kafkaBrokers" . | quote }}
CAMPAIGN_SERVICE_URL: {{ printf "http://%s:%v" (include "adplatform.componentName" (dict "root" $ "component" "campaigns")) .Values.ports.http | quote }}
{{- end }}
