"""A small Terraform module for the cloud pieces around the cluster: the artifact bucket (S3), the
registry's database (PostgreSQL on RDS), the Kubernetes namespace and the Secret the manifests refer to.

Secret values are variables marked ``sensitive``; the module writes none and never outputs one.
"""

from __future__ import annotations

from prodml.deploy.files import Files
from prodml.deploy.kubernetes import SECRET_KEYS, secret_name
from prodml.deploy.settings import DeploySettings

__all__ = ["terraform_files"]


def terraform_files(settings: DeploySettings) -> Files:
    name = settings.name
    versions = """\
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.30"
    }
  }
}
"""
    variables = f"""\
variable "name" {{
  description = "Prefix of every resource."
  type        = string
  default     = "{name}"
}}

variable "namespace" {{
  description = "Kubernetes namespace of the service."
  type        = string
  default     = "{settings.namespace}"
}}

variable "db_instance_class" {{
  description = "RDS instance class of the registry's database."
  type        = string
  default     = "db.t4g.small"
}}

variable "db_password" {{
  description = "Password of the registry database's user."
  type        = string
  sensitive   = true
}}

variable "admin_token" {{
  description = "Token of the server's admin port (PRODML_ADMIN_TOKEN)."
  type        = string
  sensitive   = true
}}

variable "aws_access_key_id" {{
  description = "Key the servers read model artifacts with."
  type        = string
  sensitive   = true
}}

variable "aws_secret_access_key" {{
  description = "Secret of that key."
  type        = string
  sensitive   = true
}}

variable "redis_url" {{
  description = "Redis URL of the prediction cache, with its password (redis://:PASSWORD@HOST:6379/0)."
  type        = string
  sensitive   = true
  default     = ""
}}

variable "tracking_host" {{
  description = "Host name of the MLflow tracking server the servers talk to."
  type        = string
}}
"""
    data = {
        "tracking-uri": 'format("http://%s", var.tracking_host)',
        "admin-token": "var.admin_token",
        "aws-access-key-id": "var.aws_access_key_id",
        "aws-secret-access-key": "var.aws_secret_access_key",
    }
    # the optional key is written only when set: an empty one would override the ConfigMap's URL with ""
    assert set(data) | {"redis-url"} == {key for key, _ in SECRET_KEYS.values()}
    width = max(len(key) for key in data) + 2
    secret_data = "".join(f"    {chr(34) + key + chr(34):<{width}} = {expr}\n" for key, expr in data.items())
    main = f"""\
resource "aws_s3_bucket" "artifacts" {{
  bucket_prefix = "${{var.name}}-artifacts-"
}}

resource "aws_s3_bucket_versioning" "artifacts" {{
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {{
    status = "Enabled"
  }}
}}

resource "aws_s3_bucket_public_access_block" "artifacts" {{
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}}

resource "aws_db_instance" "registry" {{
  identifier_prefix         = "${{var.name}}-registry-"
  engine                    = "postgres"
  engine_version            = "16"
  instance_class            = var.db_instance_class
  allocated_storage         = 20
  db_name                   = "mlflow"
  username                  = "mlflow"
  password                  = var.db_password
  storage_encrypted         = true
  backup_retention_period   = 7
  skip_final_snapshot       = false
  final_snapshot_identifier = "${{var.name}}-registry-final"
}}

resource "kubernetes_namespace_v1" "this" {{
  metadata {{
    name = var.namespace
    labels = {{
      "app.kubernetes.io/part-of" = "prodml"
    }}
  }}
}}

resource "kubernetes_secret_v1" "prodml" {{
  metadata {{
    name      = "{secret_name(settings)}"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }}
  data = merge({{
{secret_data}  }}, var.redis_url == "" ? {{}} : {{ "redis-url" = var.redis_url }})
}}
"""
    outputs = """\
output "artifact_bucket" {
  description = "Bucket for MLflow's artifacts (mlflow server --artifacts-destination s3://BUCKET)."
  value       = aws_s3_bucket.artifacts.bucket
}

output "registry_db_endpoint" {
  description = "host:port of the registry's PostgreSQL."
  value       = aws_db_instance.registry.endpoint
}

output "namespace" {
  value = kubernetes_namespace_v1.this.metadata[0].name
}
"""
    return {
        "terraform/versions.tf": versions,
        "terraform/variables.tf": variables,
        "terraform/main.tf": main,
        "terraform/outputs.tf": outputs,
    }
