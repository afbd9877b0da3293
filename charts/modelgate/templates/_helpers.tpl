{{/* Chart name. */}}
{{- define "modelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name, used as the prefix of every object. */}}
{{- define "modelgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "modelgate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "modelgate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Selector labels. */}}
{{- define "modelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "modelgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "modelgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image, also the model pods' fetch init container: a digest wins over the tag. */}}
{{- define "modelgate.image" -}}
{{- with .Values.image.digest }}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" .) }}
{{- fail (printf "image.digest must be sha256: followed by 64 lowercase hex digits, not %q" .) }}
{{- end }}
{{- printf "%s@%s" $.Values.image.repository . }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Shards must each name their namespaces, and no namespace may belong to two shards:
two operators deciding the same release would race (each write is still a
compare-and-swap, docs/operations.md, but one owner is the design). Labelled shards
(no `namespaces`) are disjoint by construction: a namespace has one value of the label
modelgate.dev/shard. Mixing the two kinds could put a listed namespace in a labelled
shard too, so it is refused. */}}
{{- define "modelgate.checkShards" -}}
{{- $seen := dict }}
{{- $names := dict }}
{{- $listed := list }}
{{- $labelled := list }}
{{- range .Values.shards }}
{{- if .namespaces }}{{ $listed = append $listed .name }}{{ else }}{{ $labelled = append $labelled .name }}{{ end }}
{{- end }}
{{- if and $listed $labelled }}
{{- fail (printf "these shards list their namespaces: %s; these do not: %s. Either every shard lists its namespaces, or none does and each serves the namespaces labelled modelgate.dev/shard=<its name>" (join ", " $listed) (join ", " $labelled)) }}
{{- end }}
{{- if and $labelled (not .Values.rbac.clusterWide) }}
{{- fail (printf "shards %s serve the namespaces labelled modelgate.dev/shard=<name>, which are not known when the chart is installed: set rbac.clusterWide=true, or list each shard's namespaces" (join ", " $labelled)) }}
{{- end }}
{{- range .Values.shards }}
{{- if not .name }}
{{- fail "every entry of shards needs a name (lowercase letters, digits and '-'), e.g. {name: a, namespaces: [team-a]}" }}
{{- end }}
{{- if hasKey $names .name }}
{{- fail (printf "shards: the name %q is used twice; each shard needs its own" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- $shard := .name }}
{{- range .namespaces }}
{{- if hasKey $seen . }}
{{- fail (printf "namespace %q is in shards %q and %q; a namespace belongs to one shard (move it by removing it from the first)" . (get $seen .) $shard) }}
{{- end }}
{{- $_ := set $seen . $shard }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the admission webhook is installed: on by default; a namespaced install
holds no right over the cluster-wide webhook configuration, so there only with
cert-manager keeping its CA bundle. */}}
{{- define "modelgate.admissionEnabled" -}}
{{- if and .Values.admission.enabled (or .Values.rbac.clusterWide .Values.admission.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* The webhook Service of a shard: (list $ shardName). */}}
{{- define "modelgate.webhookService" -}}
{{- $root := index . 0 }}
{{- $shard := index . 1 }}
{{- printf "%s%s-webhook" (include "modelgate.fullname" $root) (ternary (printf "-%s" $shard) "" (ne $shard "")) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Every name the webhook's certificate is for, as a JSON list: each shard's Service. */}}
{{- define "modelgate.webhookNames" -}}
{{- $names := list }}
{{- $shards := list "" }}
{{- with .Values.shards }}{{ $shards = list }}{{ range . }}{{ $shards = append $shards .name }}{{ end }}{{ end }}
{{- range $shards }}
{{- $svc := include "modelgate.webhookService" (list $ .) }}
{{- $names = append $names (printf "%s.%s.svc" $svc $.Release.Namespace) }}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" $svc $.Release.Namespace) }}
{{- end }}
{{- toJson $names }}
{{- end }}
