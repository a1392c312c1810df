//! nc's muscle memory, answered: `portier listen -p 8888` and friends are
//! usage errors that say the exact portier command to type instead.

/// The portier command line to suggest for `args` (the program name
/// first), when the error comes from one of nc's flags; `None` otherwise.
pub(super) fn suggestion(args: &[String]) -> Option<String> {
    let (subcommand, rest) = (args.get(1)?.as_str(), args.get(2..)?);
    if subcommand == "nc" {
        return None; // they are its own flags
    }
    let nc_flag = |arg: &str| {
        arg.starts_with('-')
            && !arg.starts_with("--")
            && arg.len() > 1
            && arg[1..].chars().all(|c| matches!(c, 'l' | 'p' | 'k'))
    };
    if !rest.iter().any(|arg| nc_flag(arg)) {
        return None;
    }
    let mut kept = Vec::new();
    let mut wants_listen = subcommand == "listen";
    let mut words = rest.iter();
    while let Some(arg) = words.next() {
        if !nc_flag(arg) {
            kept.push(arg.clone());
            continue;
        }
        wants_listen |= arg.contains('l');
        // nc's -p takes the port (or, for a client, the local port) as its value.
        if arg.ends_with('p') {
            match (wants_listen, words.next()) {
                (true, Some(port)) => kept.push(port.clone()),
                (false, _) => {
                    return Some(format!(
                        "{subcommand} has no -p: nc's -p picks the local port, which portier leaves to the system"
                    ));
                }
                (true, None) => {}
            }
        }
    }
    let command = if wants_listen {
        // `nc -l HOST PORT`: the host is the address to listen on.
        if let [host, port] = kept.as_slice()
            && !host.starts_with('-')
            && port.parse::<u16>().is_ok()
        {
            kept = vec![port.clone(), "-b".into(), host.clone()];
        }
        if subcommand != "listen" {
            kept.retain(|arg| arg.parse::<u16>().is_ok() || arg.starts_with('-'));
        }
        "listen"
    } else {
        subcommand
    };
    let mut line = format!("portier {command}");
    for arg in kept {
        line.push(' ');
        line.push_str(&arg);
    }
    Some(format!(
        "-l, -p and -k are nc's flags; portier listens with `listen`, takes the port as a plain argument and keeps listening by default: {line}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggest(line: &str) -> Option<String> {
        let args: Vec<String> = line.split(' ').map(String::from).collect();
        suggestion(&args)
    }

    #[test]
    fn nc_listening_habits_get_the_portier_command() {
        for (typed, wanted) in [
            ("portier listen -p 8888", "portier listen 8888"),
            ("portier listen -l 8888", "portier listen 8888"),
            ("portier listen -lp 8888", "portier listen 8888"),
            ("portier listen -lk 8888 -u", "portier listen 8888 -u"),
            (
                "portier listen -l 127.0.0.1 8888",
                "portier listen 8888 -b 127.0.0.1",
            ),
            ("portier connect -l 8888", "portier listen 8888"),
            ("portier send -lp 9000", "portier listen 9000"),
        ] {
            let said = suggest(typed).unwrap_or_default();
            assert!(said.ends_with(&format!(": {wanted}")), "{typed}: {said}");
        }
    }

    #[test]
    fn a_client_source_port_is_explained_and_other_errors_are_left_alone() {
        let said = suggest("portier send -p 5000 host 8888").unwrap_or_default();
        assert!(said.contains("nc's -p picks the local port"), "{said}");
        assert_eq!(suggest("portier listen --bogus"), None);
        assert_eq!(suggest("portier listen -x"), None);
    }
}
