"""The rule engine, pure (no database, web or HTTP): rule files loaded with positions (``yamlpos``,
``loader``, ``schema``), the rule set model (``ruleset``), the rule types (``types``), one condition form
(``conditions``, ``features``), its compiler and two backends (``compiler``, ``backends``), evaluation with
evidence (``evaluate``), and the tests beside each rule file (``ruletests``)."""
