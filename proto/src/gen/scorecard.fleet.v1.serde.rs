impl serde::Serialize for Check {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if self.score.is_some() {
            len += 1;
        }
        if !self.reason.is_empty() {
            len += 1;
        }
        if !self.details.is_empty() {
            len += 1;
        }
        if !self.doc_url.is_empty() {
            len += 1;
        }
        if !self.doc_short.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.Check", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if let Some(v) = self.score.as_ref() {
            struct_ser.serialize_field("score", v)?;
        }
        if !self.reason.is_empty() {
            struct_ser.serialize_field("reason", &self.reason)?;
        }
        if !self.details.is_empty() {
            struct_ser.serialize_field("details", &self.details)?;
        }
        if !self.doc_url.is_empty() {
            struct_ser.serialize_field("docUrl", &self.doc_url)?;
        }
        if !self.doc_short.is_empty() {
            struct_ser.serialize_field("docShort", &self.doc_short)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Check {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "score",
            "reason",
            "details",
            "doc_url",
            "docUrl",
            "doc_short",
            "docShort",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Score,
            Reason,
            Details,
            DocUrl,
            DocShort,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "name" => Ok(GeneratedField::Name),
                            "score" => Ok(GeneratedField::Score),
                            "reason" => Ok(GeneratedField::Reason),
                            "details" => Ok(GeneratedField::Details),
                            "docUrl" | "doc_url" => Ok(GeneratedField::DocUrl),
                            "docShort" | "doc_short" => Ok(GeneratedField::DocShort),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Check;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.Check")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Check, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut score__ = None;
                let mut reason__ = None;
                let mut details__ = None;
                let mut doc_url__ = None;
                let mut doc_short__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Score => {
                            if score__.is_some() {
                                return Err(serde::de::Error::duplicate_field("score"));
                            }
                            score__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                        GeneratedField::Reason => {
                            if reason__.is_some() {
                                return Err(serde::de::Error::duplicate_field("reason"));
                            }
                            reason__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Details => {
                            if details__.is_some() {
                                return Err(serde::de::Error::duplicate_field("details"));
                            }
                            details__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DocUrl => {
                            if doc_url__.is_some() {
                                return Err(serde::de::Error::duplicate_field("docUrl"));
                            }
                            doc_url__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DocShort => {
                            if doc_short__.is_some() {
                                return Err(serde::de::Error::duplicate_field("docShort"));
                            }
                            doc_short__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Check {
                    name: name__.unwrap_or_default(),
                    score: score__,
                    reason: reason__.unwrap_or_default(),
                    details: details__.unwrap_or_default(),
                    doc_url: doc_url__.unwrap_or_default(),
                    doc_short: doc_short__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.Check", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for CheckChange {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if self.previous.is_some() {
            len += 1;
        }
        if self.score.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.CheckChange", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if let Some(v) = self.previous.as_ref() {
            struct_ser.serialize_field("previous", v)?;
        }
        if let Some(v) = self.score.as_ref() {
            struct_ser.serialize_field("score", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for CheckChange {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "previous",
            "score",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Previous,
            Score,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "name" => Ok(GeneratedField::Name),
                            "previous" => Ok(GeneratedField::Previous),
                            "score" => Ok(GeneratedField::Score),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = CheckChange;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.CheckChange")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<CheckChange, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut previous__ = None;
                let mut score__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Previous => {
                            if previous__.is_some() {
                                return Err(serde::de::Error::duplicate_field("previous"));
                            }
                            previous__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                        GeneratedField::Score => {
                            if score__.is_some() {
                                return Err(serde::de::Error::duplicate_field("score"));
                            }
                            score__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                    }
                }
                Ok(CheckChange {
                    name: name__.unwrap_or_default(),
                    previous: previous__,
                    score: score__,
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.CheckChange", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for FailureClass {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unspecified => "FAILURE_CLASS_UNSPECIFIED",
            Self::ScanFailed => "FAILURE_CLASS_SCAN_FAILED",
            Self::Timeout => "FAILURE_CLASS_TIMEOUT",
            Self::RateLimited => "FAILURE_CLASS_RATE_LIMITED",
            Self::NoOutput => "FAILURE_CLASS_NO_OUTPUT",
            Self::InvalidOutput => "FAILURE_CLASS_INVALID_OUTPUT",
            Self::PodFailed => "FAILURE_CLASS_POD_FAILED",
            Self::Infra => "FAILURE_CLASS_INFRA",
            Self::Poison => "FAILURE_CLASS_POISON",
            Self::Exhausted => "FAILURE_CLASS_EXHAUSTED",
            Self::Webhook => "FAILURE_CLASS_WEBHOOK",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for FailureClass {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "FAILURE_CLASS_UNSPECIFIED",
            "FAILURE_CLASS_SCAN_FAILED",
            "FAILURE_CLASS_TIMEOUT",
            "FAILURE_CLASS_RATE_LIMITED",
            "FAILURE_CLASS_NO_OUTPUT",
            "FAILURE_CLASS_INVALID_OUTPUT",
            "FAILURE_CLASS_POD_FAILED",
            "FAILURE_CLASS_INFRA",
            "FAILURE_CLASS_POISON",
            "FAILURE_CLASS_EXHAUSTED",
            "FAILURE_CLASS_WEBHOOK",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = FailureClass;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "FAILURE_CLASS_UNSPECIFIED" => Ok(FailureClass::Unspecified),
                    "FAILURE_CLASS_SCAN_FAILED" => Ok(FailureClass::ScanFailed),
                    "FAILURE_CLASS_TIMEOUT" => Ok(FailureClass::Timeout),
                    "FAILURE_CLASS_RATE_LIMITED" => Ok(FailureClass::RateLimited),
                    "FAILURE_CLASS_NO_OUTPUT" => Ok(FailureClass::NoOutput),
                    "FAILURE_CLASS_INVALID_OUTPUT" => Ok(FailureClass::InvalidOutput),
                    "FAILURE_CLASS_POD_FAILED" => Ok(FailureClass::PodFailed),
                    "FAILURE_CLASS_INFRA" => Ok(FailureClass::Infra),
                    "FAILURE_CLASS_POISON" => Ok(FailureClass::Poison),
                    "FAILURE_CLASS_EXHAUSTED" => Ok(FailureClass::Exhausted),
                    "FAILURE_CLASS_WEBHOOK" => Ok(FailureClass::Webhook),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for ScoreChanged {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.repo.is_empty() {
            len += 1;
        }
        if !self.work_id.is_empty() {
            len += 1;
        }
        if self.previous_score.is_some() {
            len += 1;
        }
        if self.score.is_some() {
            len += 1;
        }
        if !self.checks.is_empty() {
            len += 1;
        }
        if self.scored_at.is_some() {
            len += 1;
        }
        if !self.commit.is_empty() {
            len += 1;
        }
        if self.first {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.ScoreChanged", len)?;
        if !self.repo.is_empty() {
            struct_ser.serialize_field("repo", &self.repo)?;
        }
        if !self.work_id.is_empty() {
            struct_ser.serialize_field("workId", &self.work_id)?;
        }
        if let Some(v) = self.previous_score.as_ref() {
            struct_ser.serialize_field("previousScore", v)?;
        }
        if let Some(v) = self.score.as_ref() {
            struct_ser.serialize_field("score", v)?;
        }
        if !self.checks.is_empty() {
            struct_ser.serialize_field("checks", &self.checks)?;
        }
        if let Some(v) = self.scored_at.as_ref() {
            struct_ser.serialize_field("scoredAt", v)?;
        }
        if !self.commit.is_empty() {
            struct_ser.serialize_field("commit", &self.commit)?;
        }
        if self.first {
            struct_ser.serialize_field("first", &self.first)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ScoreChanged {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "repo",
            "work_id",
            "workId",
            "previous_score",
            "previousScore",
            "score",
            "checks",
            "scored_at",
            "scoredAt",
            "commit",
            "first",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Repo,
            WorkId,
            PreviousScore,
            Score,
            Checks,
            ScoredAt,
            Commit,
            First,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "repo" => Ok(GeneratedField::Repo),
                            "workId" | "work_id" => Ok(GeneratedField::WorkId),
                            "previousScore" | "previous_score" => Ok(GeneratedField::PreviousScore),
                            "score" => Ok(GeneratedField::Score),
                            "checks" => Ok(GeneratedField::Checks),
                            "scoredAt" | "scored_at" => Ok(GeneratedField::ScoredAt),
                            "commit" => Ok(GeneratedField::Commit),
                            "first" => Ok(GeneratedField::First),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ScoreChanged;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.ScoreChanged")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ScoreChanged, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut repo__ = None;
                let mut work_id__ = None;
                let mut previous_score__ = None;
                let mut score__ = None;
                let mut checks__ = None;
                let mut scored_at__ = None;
                let mut commit__ = None;
                let mut first__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Repo => {
                            if repo__.is_some() {
                                return Err(serde::de::Error::duplicate_field("repo"));
                            }
                            repo__ = Some(map_.next_value()?);
                        }
                        GeneratedField::WorkId => {
                            if work_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("workId"));
                            }
                            work_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::PreviousScore => {
                            if previous_score__.is_some() {
                                return Err(serde::de::Error::duplicate_field("previousScore"));
                            }
                            previous_score__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                        GeneratedField::Score => {
                            if score__.is_some() {
                                return Err(serde::de::Error::duplicate_field("score"));
                            }
                            score__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                        GeneratedField::Checks => {
                            if checks__.is_some() {
                                return Err(serde::de::Error::duplicate_field("checks"));
                            }
                            checks__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ScoredAt => {
                            if scored_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scoredAt"));
                            }
                            scored_at__ = map_.next_value()?;
                        }
                        GeneratedField::Commit => {
                            if commit__.is_some() {
                                return Err(serde::de::Error::duplicate_field("commit"));
                            }
                            commit__ = Some(map_.next_value()?);
                        }
                        GeneratedField::First => {
                            if first__.is_some() {
                                return Err(serde::de::Error::duplicate_field("first"));
                            }
                            first__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(ScoreChanged {
                    repo: repo__.unwrap_or_default(),
                    work_id: work_id__.unwrap_or_default(),
                    previous_score: previous_score__,
                    score: score__,
                    checks: checks__.unwrap_or_default(),
                    scored_at: scored_at__,
                    commit: commit__.unwrap_or_default(),
                    first: first__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.ScoreChanged", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for ScoreResult {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.work_id.is_empty() {
            len += 1;
        }
        if !self.repo.is_empty() {
            len += 1;
        }
        if !self.commit.is_empty() {
            len += 1;
        }
        if self.score.is_some() {
            len += 1;
        }
        if !self.checks.is_empty() {
            len += 1;
        }
        if !self.scorecard_version.is_empty() {
            len += 1;
        }
        if !self.scorecard_commit.is_empty() {
            len += 1;
        }
        if self.scored_at.is_some() {
            len += 1;
        }
        if !self.raw_json.is_empty() {
            len += 1;
        }
        if !self.job_name.is_empty() {
            len += 1;
        }
        if self.exit_code != 0 {
            len += 1;
        }
        if self.started_at.is_some() {
            len += 1;
        }
        if self.finished_at.is_some() {
            len += 1;
        }
        if self.reason != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.ScoreResult", len)?;
        if !self.work_id.is_empty() {
            struct_ser.serialize_field("workId", &self.work_id)?;
        }
        if !self.repo.is_empty() {
            struct_ser.serialize_field("repo", &self.repo)?;
        }
        if !self.commit.is_empty() {
            struct_ser.serialize_field("commit", &self.commit)?;
        }
        if let Some(v) = self.score.as_ref() {
            struct_ser.serialize_field("score", v)?;
        }
        if !self.checks.is_empty() {
            struct_ser.serialize_field("checks", &self.checks)?;
        }
        if !self.scorecard_version.is_empty() {
            struct_ser.serialize_field("scorecardVersion", &self.scorecard_version)?;
        }
        if !self.scorecard_commit.is_empty() {
            struct_ser.serialize_field("scorecardCommit", &self.scorecard_commit)?;
        }
        if let Some(v) = self.scored_at.as_ref() {
            struct_ser.serialize_field("scoredAt", v)?;
        }
        if !self.raw_json.is_empty() {
            struct_ser.serialize_field("rawJson", &self.raw_json)?;
        }
        if !self.job_name.is_empty() {
            struct_ser.serialize_field("jobName", &self.job_name)?;
        }
        if self.exit_code != 0 {
            struct_ser.serialize_field("exitCode", &self.exit_code)?;
        }
        if let Some(v) = self.started_at.as_ref() {
            struct_ser.serialize_field("startedAt", v)?;
        }
        if let Some(v) = self.finished_at.as_ref() {
            struct_ser.serialize_field("finishedAt", v)?;
        }
        if self.reason != 0 {
            let v = WorkReason::try_from(self.reason)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.reason)))?;
            struct_ser.serialize_field("reason", &v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ScoreResult {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "work_id",
            "workId",
            "repo",
            "commit",
            "score",
            "checks",
            "scorecard_version",
            "scorecardVersion",
            "scorecard_commit",
            "scorecardCommit",
            "scored_at",
            "scoredAt",
            "raw_json",
            "rawJson",
            "job_name",
            "jobName",
            "exit_code",
            "exitCode",
            "started_at",
            "startedAt",
            "finished_at",
            "finishedAt",
            "reason",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            WorkId,
            Repo,
            Commit,
            Score,
            Checks,
            ScorecardVersion,
            ScorecardCommit,
            ScoredAt,
            RawJson,
            JobName,
            ExitCode,
            StartedAt,
            FinishedAt,
            Reason,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "workId" | "work_id" => Ok(GeneratedField::WorkId),
                            "repo" => Ok(GeneratedField::Repo),
                            "commit" => Ok(GeneratedField::Commit),
                            "score" => Ok(GeneratedField::Score),
                            "checks" => Ok(GeneratedField::Checks),
                            "scorecardVersion" | "scorecard_version" => Ok(GeneratedField::ScorecardVersion),
                            "scorecardCommit" | "scorecard_commit" => Ok(GeneratedField::ScorecardCommit),
                            "scoredAt" | "scored_at" => Ok(GeneratedField::ScoredAt),
                            "rawJson" | "raw_json" => Ok(GeneratedField::RawJson),
                            "jobName" | "job_name" => Ok(GeneratedField::JobName),
                            "exitCode" | "exit_code" => Ok(GeneratedField::ExitCode),
                            "startedAt" | "started_at" => Ok(GeneratedField::StartedAt),
                            "finishedAt" | "finished_at" => Ok(GeneratedField::FinishedAt),
                            "reason" => Ok(GeneratedField::Reason),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ScoreResult;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.ScoreResult")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ScoreResult, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut work_id__ = None;
                let mut repo__ = None;
                let mut commit__ = None;
                let mut score__ = None;
                let mut checks__ = None;
                let mut scorecard_version__ = None;
                let mut scorecard_commit__ = None;
                let mut scored_at__ = None;
                let mut raw_json__ = None;
                let mut job_name__ = None;
                let mut exit_code__ = None;
                let mut started_at__ = None;
                let mut finished_at__ = None;
                let mut reason__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::WorkId => {
                            if work_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("workId"));
                            }
                            work_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Repo => {
                            if repo__.is_some() {
                                return Err(serde::de::Error::duplicate_field("repo"));
                            }
                            repo__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Commit => {
                            if commit__.is_some() {
                                return Err(serde::de::Error::duplicate_field("commit"));
                            }
                            commit__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Score => {
                            if score__.is_some() {
                                return Err(serde::de::Error::duplicate_field("score"));
                            }
                            score__ = 
                                map_.next_value::<::std::option::Option<::pbjson::private::NumberDeserialize<_>>>()?.map(|x| x.0)
                            ;
                        }
                        GeneratedField::Checks => {
                            if checks__.is_some() {
                                return Err(serde::de::Error::duplicate_field("checks"));
                            }
                            checks__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ScorecardVersion => {
                            if scorecard_version__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scorecardVersion"));
                            }
                            scorecard_version__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ScorecardCommit => {
                            if scorecard_commit__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scorecardCommit"));
                            }
                            scorecard_commit__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ScoredAt => {
                            if scored_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scoredAt"));
                            }
                            scored_at__ = map_.next_value()?;
                        }
                        GeneratedField::RawJson => {
                            if raw_json__.is_some() {
                                return Err(serde::de::Error::duplicate_field("rawJson"));
                            }
                            raw_json__ = Some(map_.next_value()?);
                        }
                        GeneratedField::JobName => {
                            if job_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("jobName"));
                            }
                            job_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ExitCode => {
                            if exit_code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("exitCode"));
                            }
                            exit_code__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::StartedAt => {
                            if started_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("startedAt"));
                            }
                            started_at__ = map_.next_value()?;
                        }
                        GeneratedField::FinishedAt => {
                            if finished_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("finishedAt"));
                            }
                            finished_at__ = map_.next_value()?;
                        }
                        GeneratedField::Reason => {
                            if reason__.is_some() {
                                return Err(serde::de::Error::duplicate_field("reason"));
                            }
                            reason__ = Some(map_.next_value::<WorkReason>()? as i32);
                        }
                    }
                }
                Ok(ScoreResult {
                    work_id: work_id__.unwrap_or_default(),
                    repo: repo__.unwrap_or_default(),
                    commit: commit__.unwrap_or_default(),
                    score: score__,
                    checks: checks__.unwrap_or_default(),
                    scorecard_version: scorecard_version__.unwrap_or_default(),
                    scorecard_commit: scorecard_commit__.unwrap_or_default(),
                    scored_at: scored_at__,
                    raw_json: raw_json__.unwrap_or_default(),
                    job_name: job_name__.unwrap_or_default(),
                    exit_code: exit_code__.unwrap_or_default(),
                    started_at: started_at__,
                    finished_at: finished_at__,
                    reason: reason__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.ScoreResult", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for WebhookDelivery {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.webhook_id.is_empty() {
            len += 1;
        }
        if !self.subscription_id.is_empty() {
            len += 1;
        }
        if self.kind != 0 {
            len += 1;
        }
        if self.event.is_some() {
            len += 1;
        }
        if self.created_at.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.WebhookDelivery", len)?;
        if !self.webhook_id.is_empty() {
            struct_ser.serialize_field("webhookId", &self.webhook_id)?;
        }
        if !self.subscription_id.is_empty() {
            struct_ser.serialize_field("subscriptionId", &self.subscription_id)?;
        }
        if self.kind != 0 {
            let v = WebhookKind::try_from(self.kind)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.kind)))?;
            struct_ser.serialize_field("kind", &v)?;
        }
        if let Some(v) = self.event.as_ref() {
            struct_ser.serialize_field("event", v)?;
        }
        if let Some(v) = self.created_at.as_ref() {
            struct_ser.serialize_field("createdAt", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for WebhookDelivery {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "webhook_id",
            "webhookId",
            "subscription_id",
            "subscriptionId",
            "kind",
            "event",
            "created_at",
            "createdAt",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            WebhookId,
            SubscriptionId,
            Kind,
            Event,
            CreatedAt,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "webhookId" | "webhook_id" => Ok(GeneratedField::WebhookId),
                            "subscriptionId" | "subscription_id" => Ok(GeneratedField::SubscriptionId),
                            "kind" => Ok(GeneratedField::Kind),
                            "event" => Ok(GeneratedField::Event),
                            "createdAt" | "created_at" => Ok(GeneratedField::CreatedAt),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = WebhookDelivery;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.WebhookDelivery")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<WebhookDelivery, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut webhook_id__ = None;
                let mut subscription_id__ = None;
                let mut kind__ = None;
                let mut event__ = None;
                let mut created_at__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::WebhookId => {
                            if webhook_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("webhookId"));
                            }
                            webhook_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SubscriptionId => {
                            if subscription_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("subscriptionId"));
                            }
                            subscription_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Kind => {
                            if kind__.is_some() {
                                return Err(serde::de::Error::duplicate_field("kind"));
                            }
                            kind__ = Some(map_.next_value::<WebhookKind>()? as i32);
                        }
                        GeneratedField::Event => {
                            if event__.is_some() {
                                return Err(serde::de::Error::duplicate_field("event"));
                            }
                            event__ = map_.next_value()?;
                        }
                        GeneratedField::CreatedAt => {
                            if created_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("createdAt"));
                            }
                            created_at__ = map_.next_value()?;
                        }
                    }
                }
                Ok(WebhookDelivery {
                    webhook_id: webhook_id__.unwrap_or_default(),
                    subscription_id: subscription_id__.unwrap_or_default(),
                    kind: kind__.unwrap_or_default(),
                    event: event__,
                    created_at: created_at__,
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.WebhookDelivery", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for WebhookKind {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unspecified => "WEBHOOK_KIND_UNSPECIFIED",
            Self::ScoreChanged => "WEBHOOK_KIND_SCORE_CHANGED",
            Self::Ping => "WEBHOOK_KIND_PING",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for WebhookKind {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "WEBHOOK_KIND_UNSPECIFIED",
            "WEBHOOK_KIND_SCORE_CHANGED",
            "WEBHOOK_KIND_PING",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = WebhookKind;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "WEBHOOK_KIND_UNSPECIFIED" => Ok(WebhookKind::Unspecified),
                    "WEBHOOK_KIND_SCORE_CHANGED" => Ok(WebhookKind::ScoreChanged),
                    "WEBHOOK_KIND_PING" => Ok(WebhookKind::Ping),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for WorkFailure {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.work_id.is_empty() {
            len += 1;
        }
        if self.item.is_some() {
            len += 1;
        }
        if self.class != 0 {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        if !self.log_tail.is_empty() {
            len += 1;
        }
        if self.attempts != 0 {
            len += 1;
        }
        if self.failed_at.is_some() {
            len += 1;
        }
        if !self.job_name.is_empty() {
            len += 1;
        }
        if !self.source_subject.is_empty() {
            len += 1;
        }
        if !self.source_payload.is_empty() {
            len += 1;
        }
        if !self.repo.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.WorkFailure", len)?;
        if !self.work_id.is_empty() {
            struct_ser.serialize_field("workId", &self.work_id)?;
        }
        if let Some(v) = self.item.as_ref() {
            struct_ser.serialize_field("item", v)?;
        }
        if self.class != 0 {
            let v = FailureClass::try_from(self.class)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.class)))?;
            struct_ser.serialize_field("class", &v)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        if !self.log_tail.is_empty() {
            struct_ser.serialize_field("logTail", &self.log_tail)?;
        }
        if self.attempts != 0 {
            struct_ser.serialize_field("attempts", &self.attempts)?;
        }
        if let Some(v) = self.failed_at.as_ref() {
            struct_ser.serialize_field("failedAt", v)?;
        }
        if !self.job_name.is_empty() {
            struct_ser.serialize_field("jobName", &self.job_name)?;
        }
        if !self.source_subject.is_empty() {
            struct_ser.serialize_field("sourceSubject", &self.source_subject)?;
        }
        if !self.source_payload.is_empty() {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("sourcePayload", pbjson::private::base64::encode(&self.source_payload).as_str())?;
        }
        if !self.repo.is_empty() {
            struct_ser.serialize_field("repo", &self.repo)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for WorkFailure {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "work_id",
            "workId",
            "item",
            "class",
            "message",
            "log_tail",
            "logTail",
            "attempts",
            "failed_at",
            "failedAt",
            "job_name",
            "jobName",
            "source_subject",
            "sourceSubject",
            "source_payload",
            "sourcePayload",
            "repo",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            WorkId,
            Item,
            Class,
            Message,
            LogTail,
            Attempts,
            FailedAt,
            JobName,
            SourceSubject,
            SourcePayload,
            Repo,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "workId" | "work_id" => Ok(GeneratedField::WorkId),
                            "item" => Ok(GeneratedField::Item),
                            "class" => Ok(GeneratedField::Class),
                            "message" => Ok(GeneratedField::Message),
                            "logTail" | "log_tail" => Ok(GeneratedField::LogTail),
                            "attempts" => Ok(GeneratedField::Attempts),
                            "failedAt" | "failed_at" => Ok(GeneratedField::FailedAt),
                            "jobName" | "job_name" => Ok(GeneratedField::JobName),
                            "sourceSubject" | "source_subject" => Ok(GeneratedField::SourceSubject),
                            "sourcePayload" | "source_payload" => Ok(GeneratedField::SourcePayload),
                            "repo" => Ok(GeneratedField::Repo),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = WorkFailure;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.WorkFailure")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<WorkFailure, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut work_id__ = None;
                let mut item__ = None;
                let mut class__ = None;
                let mut message__ = None;
                let mut log_tail__ = None;
                let mut attempts__ = None;
                let mut failed_at__ = None;
                let mut job_name__ = None;
                let mut source_subject__ = None;
                let mut source_payload__ = None;
                let mut repo__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::WorkId => {
                            if work_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("workId"));
                            }
                            work_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Item => {
                            if item__.is_some() {
                                return Err(serde::de::Error::duplicate_field("item"));
                            }
                            item__ = map_.next_value()?;
                        }
                        GeneratedField::Class => {
                            if class__.is_some() {
                                return Err(serde::de::Error::duplicate_field("class"));
                            }
                            class__ = Some(map_.next_value::<FailureClass>()? as i32);
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                        GeneratedField::LogTail => {
                            if log_tail__.is_some() {
                                return Err(serde::de::Error::duplicate_field("logTail"));
                            }
                            log_tail__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Attempts => {
                            if attempts__.is_some() {
                                return Err(serde::de::Error::duplicate_field("attempts"));
                            }
                            attempts__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::FailedAt => {
                            if failed_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("failedAt"));
                            }
                            failed_at__ = map_.next_value()?;
                        }
                        GeneratedField::JobName => {
                            if job_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("jobName"));
                            }
                            job_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceSubject => {
                            if source_subject__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceSubject"));
                            }
                            source_subject__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourcePayload => {
                            if source_payload__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePayload"));
                            }
                            source_payload__ = 
                                Some(map_.next_value::<::pbjson::private::BytesDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Repo => {
                            if repo__.is_some() {
                                return Err(serde::de::Error::duplicate_field("repo"));
                            }
                            repo__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(WorkFailure {
                    work_id: work_id__.unwrap_or_default(),
                    item: item__,
                    class: class__.unwrap_or_default(),
                    message: message__.unwrap_or_default(),
                    log_tail: log_tail__.unwrap_or_default(),
                    attempts: attempts__.unwrap_or_default(),
                    failed_at: failed_at__,
                    job_name: job_name__.unwrap_or_default(),
                    source_subject: source_subject__.unwrap_or_default(),
                    source_payload: source_payload__.unwrap_or_default(),
                    repo: repo__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.WorkFailure", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for WorkItem {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.id.is_empty() {
            len += 1;
        }
        if !self.repo.is_empty() {
            len += 1;
        }
        if self.commit.is_some() {
            len += 1;
        }
        if self.reason != 0 {
            len += 1;
        }
        if self.priority != 0 {
            len += 1;
        }
        if self.enqueued_at.is_some() {
            len += 1;
        }
        if self.attempt_of.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("scorecard.fleet.v1.WorkItem", len)?;
        if !self.id.is_empty() {
            struct_ser.serialize_field("id", &self.id)?;
        }
        if !self.repo.is_empty() {
            struct_ser.serialize_field("repo", &self.repo)?;
        }
        if let Some(v) = self.commit.as_ref() {
            struct_ser.serialize_field("commit", v)?;
        }
        if self.reason != 0 {
            let v = WorkReason::try_from(self.reason)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.reason)))?;
            struct_ser.serialize_field("reason", &v)?;
        }
        if self.priority != 0 {
            struct_ser.serialize_field("priority", &self.priority)?;
        }
        if let Some(v) = self.enqueued_at.as_ref() {
            struct_ser.serialize_field("enqueuedAt", v)?;
        }
        if let Some(v) = self.attempt_of.as_ref() {
            struct_ser.serialize_field("attemptOf", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for WorkItem {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "id",
            "repo",
            "commit",
            "reason",
            "priority",
            "enqueued_at",
            "enqueuedAt",
            "attempt_of",
            "attemptOf",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
            Repo,
            Commit,
            Reason,
            Priority,
            EnqueuedAt,
            AttemptOf,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "id" => Ok(GeneratedField::Id),
                            "repo" => Ok(GeneratedField::Repo),
                            "commit" => Ok(GeneratedField::Commit),
                            "reason" => Ok(GeneratedField::Reason),
                            "priority" => Ok(GeneratedField::Priority),
                            "enqueuedAt" | "enqueued_at" => Ok(GeneratedField::EnqueuedAt),
                            "attemptOf" | "attempt_of" => Ok(GeneratedField::AttemptOf),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = WorkItem;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct scorecard.fleet.v1.WorkItem")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<WorkItem, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                let mut repo__ = None;
                let mut commit__ = None;
                let mut reason__ = None;
                let mut priority__ = None;
                let mut enqueued_at__ = None;
                let mut attempt_of__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("id"));
                            }
                            id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Repo => {
                            if repo__.is_some() {
                                return Err(serde::de::Error::duplicate_field("repo"));
                            }
                            repo__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Commit => {
                            if commit__.is_some() {
                                return Err(serde::de::Error::duplicate_field("commit"));
                            }
                            commit__ = map_.next_value()?;
                        }
                        GeneratedField::Reason => {
                            if reason__.is_some() {
                                return Err(serde::de::Error::duplicate_field("reason"));
                            }
                            reason__ = Some(map_.next_value::<WorkReason>()? as i32);
                        }
                        GeneratedField::Priority => {
                            if priority__.is_some() {
                                return Err(serde::de::Error::duplicate_field("priority"));
                            }
                            priority__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::EnqueuedAt => {
                            if enqueued_at__.is_some() {
                                return Err(serde::de::Error::duplicate_field("enqueuedAt"));
                            }
                            enqueued_at__ = map_.next_value()?;
                        }
                        GeneratedField::AttemptOf => {
                            if attempt_of__.is_some() {
                                return Err(serde::de::Error::duplicate_field("attemptOf"));
                            }
                            attempt_of__ = map_.next_value()?;
                        }
                    }
                }
                Ok(WorkItem {
                    id: id__.unwrap_or_default(),
                    repo: repo__.unwrap_or_default(),
                    commit: commit__,
                    reason: reason__.unwrap_or_default(),
                    priority: priority__.unwrap_or_default(),
                    enqueued_at: enqueued_at__,
                    attempt_of: attempt_of__,
                })
            }
        }
        deserializer.deserialize_struct("scorecard.fleet.v1.WorkItem", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for WorkReason {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unspecified => "WORK_REASON_UNSPECIFIED",
            Self::Scheduled => "WORK_REASON_SCHEDULED",
            Self::Manual => "WORK_REASON_MANUAL",
            Self::Replay => "WORK_REASON_REPLAY",
            Self::Discovery => "WORK_REASON_DISCOVERY",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for WorkReason {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "WORK_REASON_UNSPECIFIED",
            "WORK_REASON_SCHEDULED",
            "WORK_REASON_MANUAL",
            "WORK_REASON_REPLAY",
            "WORK_REASON_DISCOVERY",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = WorkReason;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "WORK_REASON_UNSPECIFIED" => Ok(WorkReason::Unspecified),
                    "WORK_REASON_SCHEDULED" => Ok(WorkReason::Scheduled),
                    "WORK_REASON_MANUAL" => Ok(WorkReason::Manual),
                    "WORK_REASON_REPLAY" => Ok(WorkReason::Replay),
                    "WORK_REASON_DISCOVERY" => Ok(WorkReason::Discovery),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
