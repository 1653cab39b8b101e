//! A stateful simulator of GitHub's self-hosted runner REST API.
