# Variables: defaults, environment overrides converted to the default's (or the declared)
# type, validation, and variables built from other variables.
variable "TAG" {
  default = "latest"
}

variable "REGISTRY" {
  default = "registry.example"
}

variable "IMAGE" {
  default = "${REGISTRY}/app"
}

variable "PUSH" {
  default = false
}

variable "JOBS" {
  default = 2
}

variable "PLATFORMS" {
  type    = list(string)
  default = ["linux/amd64"]
}

variable "CHANNEL" {
  default     = "stable"
  description = "release channel"
  validation {
    condition     = contains(["stable", "beta"], CHANNEL)
    error_message = "CHANNEL must be stable or beta."
  }
}

target "default" {
  tags      = ["${IMAGE}:${TAG}", "${IMAGE}:${CHANNEL}"]
  platforms = PLATFORMS
  args = {
    PUSH = PUSH
    JOBS = JOBS + 1
  }
  output = [PUSH ? "type=registry" : "type=docker"]
}
